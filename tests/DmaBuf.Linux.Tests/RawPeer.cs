namespace DmaBuf.Linux.Tests;

/// <summary>A raw socket as the peer, and our channel on the other end.</summary>
internal sealed class RawPeer : IDisposable
{
    private readonly SafeFdHandle _socket;

    public RawPeer(ImportCache imports)
        : this(new BufferChannelOptions { ImportCache = imports })
    {
    }

    public RawPeer(BufferChannelOptions options)
    {
        (SafeFdHandle ours, SafeFdHandle theirs) = Interop.Libc.SocketPair(Interop.Libc.SOCK_SEQPACKET);
        _socket = theirs;
        Channel = BufferChannel.FromSocket(ours, options);
    }

    /// <summary>The peer's end of the socket (it reads from it only when a test says so).</summary>
    public SafeFdHandle Socket => _socket;

    public BufferChannel Channel { get; }

    public static byte[] Encode(in WireMessage m)
    {
        byte[] data = new byte[WireFormat.SizeOf(m.Type)];
        WireFormat.Encode(m, data);
        return data;
    }

    public static SafeFdHandle SealedMemfd(long size)
    {
        SafeFdHandle fd = Interop.Libc.CreateMemfd("peer", size);
        Interop.Libc.AddSeals(fd, MemfdExporter.Seals);
        return fd;
    }

    public unsafe void Send(byte[] data, params SafeFdHandle[] fds)
    {
        int space = fds.Length == 0 ? 0 : Interop.Libc.CMSG_SPACE(fds.Length * sizeof(int));
        byte* control = stackalloc byte[Math.Max(space, 1)];
        fixed (byte* d = data)
        {
            var iov = new Interop.Libc.iovec { iov_base = d, iov_len = (nuint)data.Length };
            var msg = new Interop.Libc.msghdr { msg_iov = &iov, msg_iovlen = 1 };
            if (fds.Length > 0)
            {
                new Span<byte>(control, space).Clear();
                var header = (Interop.Libc.cmsghdr*)control;
                header->cmsg_len = (nuint)Interop.Libc.CMSG_LEN(fds.Length * sizeof(int));
                header->cmsg_level = Interop.Libc.SOL_SOCKET;
                header->cmsg_type = Interop.Libc.SCM_RIGHTS;
                int* numbers = (int*)(control + Interop.Libc.CMSG_DATA_OFFSET);
                for (int i = 0; i < fds.Length; i++)
                {
                    numbers[i] = fds[i].Number;
                }

                msg.msg_control = control;
                msg.msg_controllen = (nuint)space;
            }

            Interop.Check(Interop.Libc.sendmsg(_socket, &msg, Interop.Libc.MSG_NOSIGNAL), "sendmsg");
        }
    }

    /// <summary>Ends the connection with no goodbye, as a crashing process would.</summary>
    public void Die() => _socket.Dispose();

    public void Dispose()
    {
        _socket.Dispose();
        Channel.Dispose();
    }
}

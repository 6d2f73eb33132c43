// Ownership: a ChannelSocket owns one connected SOCK_SEQPACKET Unix socket and closes it on Dispose. A ReceivedRecord
// owns the descriptors that came with one record: TakeDescriptor hands one over, Dispose closes every one not taken
// (surplus ones, and all of them after MSG_CTRUNC or a refused message).

namespace DmaBuf.Linux;

/// <summary>A point in time a call must return by (<see cref="Environment.TickCount64"/> milliseconds), or never.</summary>
internal readonly struct Deadline
{
    private readonly long _at;

    private Deadline(long at) => _at = at;

    /// <summary>No deadline.</summary>
    public static Deadline Never => new(long.MaxValue);

    /// <summary>Now: one attempt, no waiting.</summary>
    public static Deadline Now => new(Environment.TickCount64);

    public bool IsNever => _at == long.MaxValue;

    /// <summary>Milliseconds left for <c>poll</c>: -1 when never, 0 when passed.</summary>
    public int RemainingMilliseconds => IsNever ? -1 : (int)Math.Clamp(_at - Environment.TickCount64, 0, int.MaxValue);

    public bool HasPassed => !IsNever && Environment.TickCount64 >= _at;

    /// <summary><paramref name="timeout"/> from now; <see cref="Timeout.InfiniteTimeSpan"/> is never.</summary>
    public static Deadline After(TimeSpan timeout) =>
        timeout == Timeout.InfiniteTimeSpan ? Never : new(Environment.TickCount64 + CeilingMilliseconds(timeout));

    /// <summary>Whole milliseconds, rounded up, of a non-negative timeout (0 for a negative one); integer arithmetic only.</summary>
    private static long CeilingMilliseconds(TimeSpan timeout) =>
        timeout.Ticks <= 0 ? 0 : ((timeout.Ticks - 1) / TimeSpan.TicksPerMillisecond) + 1;

    public static Deadline Earlier(Deadline a, Deadline b) => a._at <= b._at ? a : b;
}

/// <summary>How a send ended.</summary>
internal enum SendStatus
{
    /// <summary>The whole record is queued at the peer (a seqpacket send is all or nothing).</summary>
    Sent,

    /// <summary>The peer did not read in time: nothing was sent.</summary>
    TimedOut,

    /// <summary>The peer closed (<c>EPIPE</c>, <c>ECONNRESET</c>, <c>ENOTCONN</c>), or we shut the socket down.</summary>
    PeerGone,
}

/// <summary>How a receive ended.</summary>
internal enum ReceiveStatus
{
    /// <summary>A record arrived (possibly zero bytes long: a protocol error, never the end).</summary>
    Record,

    /// <summary>Nothing arrived in time.</summary>
    TimedOut,

    /// <summary>The connection ended: the peer closed or shut down, or we did.</summary>
    EndOfStream,
}

/// <summary>One received record: its length, its truncation flags, and the descriptors that came with it.</summary>
internal sealed class ReceivedRecord : IDisposable
{
    private readonly List<SafeFdHandle> _fds;

    internal ReceivedRecord(int length, int flags, List<SafeFdHandle> fds)
    {
        Length = length;
        Flags = flags;
        _fds = fds;
    }

    public int Length { get; }

    /// <summary><c>msg_flags</c>: <c>MSG_CTRUNC</c>, <c>MSG_TRUNC</c>.</summary>
    public int Flags { get; }

    public bool ControlTruncated => (Flags & Interop.Libc.MSG_CTRUNC) != 0;

    public bool DataTruncated => (Flags & Interop.Libc.MSG_TRUNC) != 0;

    /// <summary>Descriptors not yet taken.</summary>
    public int DescriptorCount => _fds.Count;

    /// <summary>Hands the first descriptor over to the caller.</summary>
    public SafeFdHandle TakeDescriptor()
    {
        SafeFdHandle fd = _fds[0];
        _fds.RemoveAt(0);
        return fd;
    }

    /// <summary>Hands the last descriptor over to the caller (a frame's fence comes after its buffer's).</summary>
    public SafeFdHandle TakeLastDescriptor()
    {
        SafeFdHandle fd = _fds[^1];
        _fds.RemoveAt(_fds.Count - 1);
        return fd;
    }

    /// <summary>Closes every descriptor not taken.</summary>
    public void Dispose()
    {
        foreach (SafeFdHandle fd in _fds)
        {
            fd.Dispose();
        }

        _fds.Clear();
    }
}

/// <summary>
/// The socket layer of the channel: one message per <c>SOCK_SEQPACKET</c> record, descriptors beside it as
/// <c>SCM_RIGHTS</c>. Knows nothing of the protocol.
/// </summary>
/// <remarks>
/// <para><b>Deadlines.</b> Every call is non-blocking (<c>MSG_DONTWAIT</c>) and waits in <c>poll</c> for at most what is
/// left of its deadline, so no call outlives it, however the peer behaves. (Chosen over <c>SO_SNDTIMEO</c>, which is one
/// value per socket: callers here have their own deadlines, and part of one may already be spent waiting for the send
/// order.) <c>EINTR</c> retries with what is left; <c>EAGAIN</c> waits in <c>poll</c>. On a connected seqpacket pair the
/// sender's limit is its send buffer (the bytes it has queued at the peer), and <c>POLLOUT</c> reports exactly when
/// that has room again.</para>
/// <para><b>End of stream.</b> On <c>SOCK_SEQPACKET</c>, <c>recvmsg</c> returns 0 both for a zero-length record and at
/// end of stream. A 0 is the end only when <c>poll</c> then reports <c>POLLHUP</c> or <c>POLLRDHUP</c> (the peer
/// closed or shut down its side, or we shut ours); otherwise it was a record, and the caller refuses it. A peer that
/// sends a zero-length record and closes at once is indistinguishable from one that just closed: either way it leaves
/// without a clean goodbye unless it sent one before.</para>
/// <para><b>Shutdown.</b> <see cref="Shutdown"/> wakes every thread waiting in <c>poll</c> on this socket: they see
/// <c>POLLHUP</c> and end (<see cref="SendStatus.PeerGone"/>, <see cref="ReceiveStatus.EndOfStream"/>).</para>
/// </remarks>
internal sealed class ChannelSocket : IDisposable
{
    /// <summary>The largest record read; longer ones are truncated (<c>MSG_TRUNC</c>) and refused.</summary>
    internal const int MaxRecord = 128;

    /// <summary>Descriptors one receive takes at most; more set <c>MSG_CTRUNC</c> (the kernel closes the rest).</summary>
    private const int MaxFds = 4;

    private readonly SafeFdHandle _socket;

    internal ChannelSocket(SafeFdHandle socket) => _socket = socket;

    internal SafeFdHandle Handle => _socket;

    /// <summary>Sends one record with at most one descriptor, waiting until <paramref name="deadline"/> for room.</summary>
    /// <exception cref="LinuxErrorException">An error that is not the peer's going away.</exception>
    /// <exception cref="ObjectDisposedException">The socket was closed.</exception>
    internal SendStatus Send(ReadOnlySpan<byte> data, SafeFdHandle? fd, Deadline deadline) =>
        Send(data, fd, null, deadline);

    /// <summary>Sends one record with at most two descriptors, waiting until <paramref name="deadline"/> for room.</summary>
    /// <exception cref="LinuxErrorException">An error that is not the peer's going away.</exception>
    /// <exception cref="ObjectDisposedException">The socket was closed.</exception>
    internal unsafe SendStatus Send(ReadOnlySpan<byte> data, SafeFdHandle? fd, SafeFdHandle? second, Deadline deadline)
    {
        int count = fd is null ? 0 : second is null ? 1 : 2;
        int controlSpace = Interop.Libc.CMSG_SPACE(2 * sizeof(int));
        byte* control = stackalloc byte[controlSpace];
        new Span<byte>(control, controlSpace).Clear();
        bool added = false;
        bool addedSecond = false;
        fixed (byte* d = data)
        {
            var iov = new Interop.Libc.iovec { iov_base = d, iov_len = (nuint)data.Length };
            var msg = new Interop.Libc.msghdr { msg_iov = &iov, msg_iovlen = 1 };
            try
            {
                if (fd is not null)
                {
                    fd.DangerousAddRef(ref added);
                    var header = (Interop.Libc.cmsghdr*)control;
                    header->cmsg_len = (nuint)Interop.Libc.CMSG_LEN(count * sizeof(int));
                    header->cmsg_level = Interop.Libc.SOL_SOCKET;
                    header->cmsg_type = Interop.Libc.SCM_RIGHTS;
                    *(int*)(control + Interop.Libc.CMSG_DATA_OFFSET) = (int)fd.DangerousGetHandle();
                    if (second is not null)
                    {
                        second.DangerousAddRef(ref addedSecond);
                        *(int*)(control + Interop.Libc.CMSG_DATA_OFFSET + sizeof(int)) = (int)second.DangerousGetHandle();
                    }

                    msg.msg_control = control;
                    msg.msg_controllen = (nuint)Interop.Libc.CMSG_SPACE(count * sizeof(int));
                }

                while (true)
                {
                    if (Interop.Libc.sendmsg(_socket, &msg, Interop.Libc.MSG_NOSIGNAL | Interop.Libc.MSG_DONTWAIT) >= 0)
                    {
                        return SendStatus.Sent;
                    }

                    int errno = Interop.LastErrno;
                    switch (errno)
                    {
                        case Interop.Libc.EINTR:
                            continue;
                        case Interop.Libc.EAGAIN:
                            if (!Wait(Interop.Libc.POLLOUT, deadline))
                            {
                                return SendStatus.TimedOut;
                            }

                            continue;
                        case Interop.Libc.EPIPE or Interop.Libc.ECONNRESET or Interop.Libc.ENOTCONN:
                            return SendStatus.PeerGone;
                        default:
                            throw Interop.GetExceptionForErrno(errno, "sendmsg");
                    }
                }
            }
            finally
            {
                if (added)
                {
                    fd!.DangerousRelease();
                }

                if (addedSecond)
                {
                    second!.DangerousRelease();
                }
            }
        }
    }

    /// <summary>
    /// Receives one record into <paramref name="data"/> (at least <see cref="MaxRecord"/> bytes), waiting until
    /// <paramref name="deadline"/>. On <see cref="ReceiveStatus.Record"/>, <paramref name="record"/> owns the
    /// descriptors that came with it; <paramref name="how"/> says how the stream ended otherwise.
    /// </summary>
    /// <exception cref="LinuxErrorException">An error that is not the peer's going away; no descriptor leaks.</exception>
    /// <exception cref="ObjectDisposedException">The socket was closed.</exception>
    internal unsafe ReceiveStatus Receive(Span<byte> data, Deadline deadline, out ReceivedRecord? record, out string how)
    {
        record = null;
        how = "";
        int controlSpace = Interop.Libc.CMSG_SPACE(MaxFds * sizeof(int));
        byte* control = stackalloc byte[controlSpace];
        bool resetSeen = false;
        fixed (byte* d = data)
        {
            while (true)
            {
                new Span<byte>(control, controlSpace).Clear();
                var iov = new Interop.Libc.iovec { iov_base = d, iov_len = (nuint)Math.Min(data.Length, MaxRecord) };
                var msg = new Interop.Libc.msghdr
                {
                    msg_iov = &iov,
                    msg_iovlen = 1,
                    msg_control = control,
                    msg_controllen = (nuint)controlSpace,
                };
                nint n = Interop.Libc.recvmsg(_socket, &msg, Interop.Libc.MSG_CMSG_CLOEXEC | Interop.Libc.MSG_DONTWAIT);
                if (n < 0)
                {
                    int errno = Interop.LastErrno;
                    switch (errno)
                    {
                        case Interop.Libc.EINTR:
                            continue;
                        case Interop.Libc.EAGAIN:
                            if (!Wait(Interop.Libc.POLLIN, deadline))
                            {
                                return ReceiveStatus.TimedOut;
                            }

                            continue;
                        case Interop.Libc.ECONNRESET when !resetSeen:
                            // Reported once when the peer closed with messages of ours unread; its own messages (a
                            // goodbye, say) are still queued behind the error. Read on.
                            resetSeen = true;
                            continue;
                        case Interop.Libc.ECONNRESET or Interop.Libc.ENOTCONN:
                            how = "recvmsg: " + Interop.Libc.ErrnoName(errno);
                            return ReceiveStatus.EndOfStream;
                        default:
                            throw Interop.GetExceptionForErrno(errno, "recvmsg");
                    }
                }

                List<SafeFdHandle> fds = CollectFds(&msg);
                // msg_flags also echoes MSG_CMSG_CLOEXEC; only the truncation bits tell of a record.
                bool truncated = (msg.msg_flags & (Interop.Libc.MSG_CTRUNC | Interop.Libc.MSG_TRUNC)) != 0;
                if (n == 0 && fds.Count == 0 && !truncated && HungUp())
                {
                    how = "the connection ended";
                    return ReceiveStatus.EndOfStream;
                }

                record = new ReceivedRecord((int)n, msg.msg_flags, fds);
                return ReceiveStatus.Record;
            }
        }
    }

    /// <summary>Shuts both directions down (waking every waiter); harmless when already shut or closed.</summary>
    internal void Shutdown()
    {
        try
        {
            _ = Interop.Libc.shutdown(_socket, Interop.Libc.SHUT_RDWR);
        }
        catch (ObjectDisposedException)
        {
            // closed already
        }
    }

    public void Dispose() => _socket.Dispose();

    private bool HungUp()
    {
        short revents = Poll(Interop.Libc.POLLIN | Interop.Libc.POLLRDHUP, 0);
        return (revents & (Interop.Libc.POLLHUP | Interop.Libc.POLLRDHUP)) != 0;
    }

    /// <summary>Waits for <paramref name="events"/> (or an error or hang-up); false when the deadline passed first.</summary>
    private bool Wait(short events, Deadline deadline)
    {
        while (true)
        {
            int ms = deadline.RemainingMilliseconds;
            if (ms == 0)
            {
                return false;
            }

            if (Poll(events, ms) != 0)
            {
                return true;
            }
        }
    }

    /// <summary>
    /// One <c>poll</c> on this socket (readable, hung up) and <paramref name="other"/> (readable) together, for at most
    /// <paramref name="timeoutMs"/>; EINTR counts as "nothing yet". Returns both <c>revents</c>.
    /// </summary>
    /// <exception cref="ObjectDisposedException">Either descriptor was closed.</exception>
    internal unsafe (short Socket, short Other) PollWith(SafeFdHandle other, int timeoutMs)
    {
        bool added = false;
        bool addedOther = false;
        try
        {
            _socket.DangerousAddRef(ref added);
            other.DangerousAddRef(ref addedOther);
            Interop.Libc.pollfd* p = stackalloc Interop.Libc.pollfd[2];
            p[0] = new Interop.Libc.pollfd { fd = (int)_socket.DangerousGetHandle(), events = Interop.Libc.POLLIN | Interop.Libc.POLLRDHUP };
            p[1] = new Interop.Libc.pollfd { fd = (int)other.DangerousGetHandle(), events = Interop.Libc.POLLIN };
            int r = Interop.Libc.poll(p, 2, timeoutMs);
            if (r >= 0)
            {
                return r > 0 ? (p[0].revents, p[1].revents) : ((short)0, (short)0);
            }

            int errno = Interop.LastErrno;
            return errno == Interop.Libc.EINTR ? ((short)0, (short)0) : throw Interop.GetExceptionForErrno(errno, "poll");
        }
        finally
        {
            if (addedOther)
            {
                other.DangerousRelease();
            }

            if (added)
            {
                _socket.DangerousRelease();
            }
        }
    }

    /// <summary>Whether a record (or the end) is waiting, without waiting.</summary>
    internal bool ReadableNow() => Poll(Interop.Libc.POLLIN | Interop.Libc.POLLRDHUP, 0) != 0;

    /// <summary>Whether a send would find room now (<c>POLLOUT</c>), or the socket is hung up or in error (a send then says so).</summary>
    internal bool WritableNow() => Poll(Interop.Libc.POLLOUT | Interop.Libc.POLLRDHUP, 0) != 0;

    /// <summary>One <c>poll</c>; EINTR counts as "nothing yet" so the caller re-reads its deadline.</summary>
    private unsafe short Poll(short events, int timeoutMs)
    {
        bool added = false;
        try
        {
            _socket.DangerousAddRef(ref added);
            var p = new Interop.Libc.pollfd { fd = (int)_socket.DangerousGetHandle(), events = events };
            int r = Interop.Libc.poll(&p, 1, timeoutMs);
            if (r >= 0)
            {
                return r > 0 ? p.revents : (short)0;
            }

            int errno = Interop.LastErrno;
            return errno == Interop.Libc.EINTR ? (short)0 : throw Interop.GetExceptionForErrno(errno, "poll");
        }
        finally
        {
            if (added)
            {
                _socket.DangerousRelease();
            }
        }
    }

    private static unsafe List<SafeFdHandle> CollectFds(Interop.Libc.msghdr* msg)
    {
        var fds = new List<SafeFdHandle>();
        int headerSize = sizeof(Interop.Libc.cmsghdr);
        byte* start = (byte*)msg->msg_control;
        byte* end = start + (long)msg->msg_controllen;
        byte* p = start;
        while (p + headerSize <= end)
        {
            var header = (Interop.Libc.cmsghdr*)p;
            long length = (long)header->cmsg_len;
            if (length < headerSize || p + length > end)
            {
                break;
            }

            if (header->cmsg_level == Interop.Libc.SOL_SOCKET && header->cmsg_type == Interop.Libc.SCM_RIGHTS)
            {
                int count = (int)((length - Interop.Libc.CMSG_LEN(0)) / sizeof(int));
                int* numbers = (int*)(p + Interop.Libc.CMSG_DATA_OFFSET);
                for (int i = 0; i < count; i++)
                {
                    fds.Add(new SafeFdHandle(numbers[i]));
                }
            }

            p += Interop.Libc.CMSG_ALIGN((int)length);
        }

        return fds;
    }
}

namespace DmaBuf.Linux;

/// <summary>
/// Listens for <see cref="BufferChannel"/> connections on an abstract Unix socket name (no file on disk; the name
/// disappears with the listener). Every accepted peer's credentials are checked as the options say.
/// </summary>
public sealed class BufferChannelListener : IDisposable
{
    private readonly SafeFdHandle _socket;
    private readonly BufferChannelOptions? _options;

    private BufferChannelListener(SafeFdHandle socket, string name, BufferChannelOptions? options)
    {
        _socket = socket;
        Name = name;
        _options = options;
    }

    /// <summary>The abstract socket name (without the leading NUL).</summary>
    public string Name { get; }

    /// <summary>Listens on abstract socket <paramref name="name"/>.</summary>
    /// <exception cref="LinuxErrorException">The name is taken (<c>EADDRINUSE</c>) or another socket error.</exception>
    public static unsafe BufferChannelListener Listen(string name, BufferChannelOptions? options = null, int backlog = 16)
    {
        uint length = Interop.Libc.AbstractAddress(name, out Interop.Libc.sockaddr_un address);
        SafeFdHandle socket = Interop.Libc.UnixSocket(Interop.Libc.SOCK_SEQPACKET);
        try
        {
            Interop.Check(Interop.Libc.bind(socket, &address, length), "bind", "@" + name);
            Interop.Check(Interop.Libc.listen(socket, backlog), "listen", "@" + name);
            return new BufferChannelListener(socket, name, options);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Waits for a connection and returns its channel.</summary>
    /// <exception cref="TimeoutException">No connection within <paramref name="timeout"/>.</exception>
    /// <exception cref="ChannelProtocolException">The peer's credentials are not allowed; that connection was closed.</exception>
    public BufferChannel Accept(TimeSpan? timeout = null)
    {
        ObjectDisposedException.ThrowIf(_socket.IsClosed, this);
        if (timeout is { } t && t != Timeout.InfiniteTimeSpan && !Interop.Libc.PollReadable(_socket, (int)Math.Min(int.MaxValue, t.TotalMilliseconds)))
        {
            throw new TimeoutException($"No connection on @{Name} within {t}.");
        }

#pragma warning disable CA2000 // FromSocket owns the socket from the call on: it closes it on every failure
        return BufferChannel.FromSocket(Interop.Libc.Accept(_socket, "@" + Name), _options);
#pragma warning restore CA2000
    }

    /// <summary>Stops listening.</summary>
    public void Dispose() => _socket.Dispose();
}

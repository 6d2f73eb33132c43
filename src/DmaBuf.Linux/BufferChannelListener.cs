namespace DmaBuf.Linux;

/// <summary>
/// Listens for <see cref="BufferChannel"/> connections on an abstract Unix socket name (no file on disk; the name
/// disappears with the listener). Every accepted peer's credentials are checked as the options say.
/// </summary>
public sealed class BufferChannelListener : IDisposable
{
    private readonly SafeFdHandle _socket;
    private readonly BufferChannelOptions? _options;

    // Ring-transport connections that sent our half of the ring's setup and wait for the peer's, each until its send
    // timeout. Also the lock of Accept: one accepts at a time.
    private readonly List<(BufferChannel Channel, Deadline SetupBy)> _handshakes = [];

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

    /// <summary>
    /// Waits for a connection and returns its channel. On the ring transport a connection is returned once the peer's
    /// half of the ring's setup came; a peer that connects and says nothing waits beside the others (up to the send
    /// timeout) instead of holding up the connections behind it.
    /// </summary>
    /// <exception cref="TimeoutException">No connection completed within <paramref name="timeout"/>.</exception>
    /// <exception cref="ChannelProtocolException">
    /// A connection's peer is not allowed (credentials), or its ring setup was wrong or did not come within the send
    /// timeout; that connection was closed, and the next call goes on with the others.
    /// </exception>
    public BufferChannel Accept(TimeSpan? timeout = null)
    {
        ObjectDisposedException.ThrowIf(_socket.IsClosed, this);
        Deadline deadline = Deadline.After(timeout ?? Timeout.InfiniteTimeSpan);
        if (!Monitor.TryEnter(_handshakes, deadline.RemainingMilliseconds))
        {
            throw new TimeoutException($"No connection on @{Name} within {timeout}: another Accept held the listener.");
        }

        try
        {
            while (true)
            {
                ObjectDisposedException.ThrowIf(_socket.IsClosed, this);
                if (TakeHandshake() is { } ready)
                {
                    return ready;
                }

                // Wait for a new connection or for a handshake's next record, until our deadline or the earliest
                // handshake's, whichever comes first.
                Deadline until = deadline;
                var fds = new List<SafeFdHandle>(_handshakes.Count + 1) { _socket };
                foreach ((BufferChannel channel, Deadline setupBy) in _handshakes)
                {
                    fds.Add(channel.SocketHandle);
                    until = Deadline.Earlier(until, setupBy);
                }

                int readable = Interop.Libc.PollAnyReadable(fds, until.RemainingMilliseconds);
                if (readable == 0)
                {
#pragma warning disable CA2000 // StartAccepted owns the socket from the call on: it closes it on every failure
                    BufferChannel accepted = BufferChannel.StartAccepted(Interop.Libc.Accept(_socket, "@" + Name), _options);
#pragma warning restore CA2000
                    if (!accepted.AwaitsRingSetup)
                    {
                        return accepted; // the socket transport: nothing more to wait for
                    }

                    _handshakes.Add((accepted, Deadline.After(accepted.SendTimeout)));
                }
                else if (readable < 0 && deadline.HasPassed)
                {
                    throw new TimeoutException($"No connection on @{Name} within {timeout}.");
                }
            }
        }
        finally
        {
            Monitor.Exit(_handshakes);
        }
    }

    /// <summary>Stops listening; connections still in their handshake are closed.</summary>
    public void Dispose()
    {
        _socket.Dispose();
        lock (_handshakes)
        {
            foreach ((BufferChannel channel, _) in _handshakes)
            {
                channel.Dispose();
            }

            _handshakes.Clear();
        }
    }

    /// <summary>
    /// A handshake whose peer's setup came (the channel, ready), or that failed or ran out of time (thrown, the channel
    /// closed); null when every handshake still waits. Under the lock.
    /// </summary>
    private BufferChannel? TakeHandshake()
    {
        for (int i = 0; i < _handshakes.Count; i++)
        {
            (BufferChannel channel, Deadline setupBy) = _handshakes[i];
            if (!setupBy.HasPassed && !Interop.Libc.PollReadable(channel.SocketHandle, 0))
            {
                continue;
            }

            _handshakes.RemoveAt(i);
            channel.FinishRingSetup(Deadline.Now); // the record is there, or its time is up: no waiting
            return channel;
        }

        return null;
    }
}

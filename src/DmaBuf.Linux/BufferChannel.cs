// Ownership: a channel owns its socket. For each buffer whose descriptor it has sent (registered with the peer) it holds
// one reference until Forget or close, as the peer holds the descriptor; for each buffer id the peer registered with
// us it holds one reference to the imported buffer until the peer forgets it or the connection closes. Whatever the
// way a connection ends (Dispose, a protocol error, the peer dying), all of these are dropped, the socket is closed,
// and buffers the peer had not released go back to the pool.
using System.Diagnostics;

namespace DmaBuf.Linux;

/// <summary>Credentials of the process at the other end of a connection (<c>SO_PEERCRED</c>).</summary>
/// <param name="ProcessId">Its pid (at connect time).</param>
/// <param name="UserId">Its effective uid.</param>
/// <param name="GroupId">Its effective gid.</param>
public readonly record struct PeerCredentials(int ProcessId, uint UserId, uint GroupId);

/// <summary>Settings of a <see cref="BufferChannel"/>.</summary>
public sealed class BufferChannelOptions
{
    /// <summary>Where received descriptors are imported; <see cref="ImportCache.Shared"/> when null.</summary>
    public ImportCache? ImportCache { get; init; }

    /// <summary>The pool sent buffers return to when the peer releases them or goes away.</summary>
    public BufferPool? ReturnTo { get; init; }

    /// <summary>The uid the peer must have; null: our effective uid (the default check).</summary>
    public uint? AllowedUserId { get; init; }

    /// <summary>Skip the uid check (any local user may connect). Off by default.</summary>
    public bool AllowAnyUser { get; init; }

    /// <summary>If set, the peer must be this process (e.g. the child we started).</summary>
    public int? ExpectedProcessId { get; init; }

    /// <summary>How many buffer ids the peer may register with us at once.</summary>
    public int MaxRegisteredBuffers { get; init; } = 4096;
}

/// <summary>Counters of one channel.</summary>
/// <param name="MessagesSent">Messages sent.</param>
/// <param name="MessagesReceived">Messages received.</param>
/// <param name="FdsSent">Descriptors sent.</param>
/// <param name="FdsReceived">Descriptors received (including refused ones).</param>
public readonly record struct ChannelStatistics(long MessagesSent, long MessagesReceived, long FdsSent, long FdsReceived);

/// <summary>
/// A connection that passes buffers between two processes with no copy: a <c>SOCK_SEQPACKET</c> Unix socket. The first
/// send of a buffer carries its descriptor (<c>SCM_RIGHTS</c>); later sends carry only its id. The receiver imports
/// through an <see cref="ImportCache"/>, acknowledges, and releases, which returns the buffer to the sender's pool.
/// </summary>
/// <remarks>
/// <para><b>Untrusted peer.</b> Every message is checked: size, magic, version, type, flags, the descriptors that came
/// with it (surplus ones, <c>MSG_CTRUNC</c>), buffer ids, and each descriptor (memfd sealed against shrinking, or
/// dma-buf; big enough). A violation throws <see cref="ChannelProtocolException"/> with the reason and closes this
/// connection only, releasing every descriptor and buffer it held. The peer's uid is checked when the channel is made.</para>
/// <para><b>Threads.</b> One thread receives at a time; sends may come from any thread. Release and acknowledge may be
/// sent while another thread is blocked in <see cref="Receive()"/>.</para>
/// <para>Wire format: docs/wire-format.md.</para>
/// </remarks>
public sealed class BufferChannel : IDisposable
{
    private static readonly PongMessage s_pong = new();

    private readonly SafeFdHandle _socket;
    private readonly ImportCache _imports;
    private readonly BufferPool? _pool;
    private readonly int _maxRegistered;
    private readonly Lock _stateLock = new();
    private readonly Lock _sendLock = new();
    private readonly Lock _receiveLock = new();
    private readonly Dictionary<long, DmaBufHandle> _shared = [];      // ours, registered with the peer
    private readonly Dictionary<(long Id, long Sequence), bool> _outstanding = []; // ours, delivered (true) or being sent
    private readonly Dictionary<long, DmaBufHandle> _registered = [];  // the peer's, registered with us
    private readonly Queue<ChannelMessage> _pending = new();
    private long _nextSequence;
    private bool _closed;
    private bool _disposed;
    private bool _goodbyeReceived;
    private ChannelErrorReason _closeReason;
    private long _messagesSent;
    private long _messagesReceived;
    private long _fdsSent;
    private long _fdsReceived;

    private BufferChannel(SafeFdHandle socket, BufferChannelOptions options, PeerCredentials peer)
    {
        _socket = socket;
        _imports = options.ImportCache ?? ImportCache.Shared;
        _pool = options.ReturnTo;
        _maxRegistered = options.MaxRegisteredBuffers;
        Peer = peer;
    }

    /// <summary>The peer's credentials, checked when the channel was made.</summary>
    public PeerCredentials Peer { get; }

    /// <summary>Whether the connection is closed (disposed, failed, or ended by the peer).</summary>
    public bool IsClosed
    {
        get
        {
            lock (_stateLock)
            {
                return _closed;
            }
        }
    }

    /// <summary>Why the connection closed; <see cref="ChannelErrorReason.None"/> if it is open or ended cleanly.</summary>
    public ChannelErrorReason CloseReason
    {
        get
        {
            lock (_stateLock)
            {
                return _closeReason;
            }
        }
    }

    /// <summary>Our buffers the peer holds a descriptor for.</summary>
    public int SharedBuffers
    {
        get
        {
            lock (_stateLock)
            {
                return _shared.Count;
            }
        }
    }

    /// <summary>Deliveries the peer has not released yet.</summary>
    public int OutstandingDeliveries
    {
        get
        {
            lock (_stateLock)
            {
                return _outstanding.Count;
            }
        }
    }

    /// <summary>The peer's buffers registered with us (each holds a reference to the imported buffer).</summary>
    public int RegisteredBuffers
    {
        get
        {
            lock (_stateLock)
            {
                return _registered.Count;
            }
        }
    }

    /// <summary>Counters.</summary>
    public ChannelStatistics Statistics => new(
        Interlocked.Read(ref _messagesSent), Interlocked.Read(ref _messagesReceived),
        Interlocked.Read(ref _fdsSent), Interlocked.Read(ref _fdsReceived));

    /// <summary>Makes a connected pair in this process (<c>socketpair</c>).</summary>
    public static (BufferChannel First, BufferChannel Second) CreatePair(BufferChannelOptions? first = null, BufferChannelOptions? second = null)
    {
        (SafeFdHandle a, SafeFdHandle b) = Interop.Libc.SocketPair(Interop.Libc.SOCK_SEQPACKET);
        BufferChannel? channelA = null;
        try
        {
            channelA = FromSocket(a, first);
            return (channelA, FromSocket(b, second));
        }
        catch
        {
            channelA?.Dispose();
            a.Dispose();
            b.Dispose();
            throw;
        }
    }

    /// <summary>Connects to a <see cref="BufferChannelListener"/> listening on abstract socket <paramref name="name"/>.</summary>
    /// <exception cref="LinuxErrorException">Nobody listens there (<c>ECONNREFUSED</c>), or another socket error.</exception>
    /// <exception cref="ChannelProtocolException">The listener's credentials are not allowed.</exception>
    public static unsafe BufferChannel Connect(string name, BufferChannelOptions? options = null)
    {
        uint length = Interop.Libc.AbstractAddress(name, out Interop.Libc.sockaddr_un address);
        SafeFdHandle socket = Interop.Libc.UnixSocket(Interop.Libc.SOCK_SEQPACKET);
        try
        {
            while (Interop.Libc.connect(socket, &address, length) < 0)
            {
                int errno = Interop.LastErrno;
                if (errno != Interop.Libc.EINTR)
                {
                    throw Interop.GetExceptionForErrno(errno, "connect", "@" + name);
                }
            }
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        return FromSocket(socket, options);
    }

    /// <summary>
    /// Makes a channel over a connected <c>SOCK_SEQPACKET</c> Unix socket, taking ownership of it, after checking the
    /// peer's credentials.
    /// </summary>
    /// <exception cref="ChannelProtocolException">The peer's credentials are not allowed; the socket was closed.</exception>
    public static BufferChannel FromSocket(SafeFdHandle socket, BufferChannelOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(socket);
        options ??= new BufferChannelOptions();
        try
        {
            Interop.Libc.ucred c = Interop.Libc.PeerCredentials(socket);
            var peer = new PeerCredentials(c.pid, c.uid, c.gid);
            if (options.ExpectedProcessId is int pid && peer.ProcessId != pid)
            {
                throw new ChannelProtocolException(
                    ChannelErrorReason.PeerCredentials, $"The peer is process {peer.ProcessId}, not the expected {pid}.");
            }

            uint allowed = options.AllowedUserId ?? Interop.Libc.geteuid();
            if (!options.AllowAnyUser && peer.UserId != allowed)
            {
                throw new ChannelProtocolException(
                    ChannelErrorReason.PeerCredentials, $"The peer (pid {peer.ProcessId}) runs as uid {peer.UserId}; only uid {allowed} is allowed.");
            }

            return new BufferChannel(socket, options, peer);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Sends <paramref name="buffer"/> to the peer and returns the delivery's sequence number. The first send of a buffer
    /// carries its descriptor and registers it with the peer; later sends carry only its id. A transient send always
    /// carries the descriptor and registers nothing (the peer maps it afresh: the "remap" way).
    /// </summary>
    /// <param name="buffer">A Linux-backed buffer (borrowed; the channel takes its own reference if it registers it).</param>
    /// <param name="userData">64 bits of application data the peer sees (a frame number, a checksum).</param>
    /// <param name="transient">Send the descriptor every time and do not register it.</param>
    /// <exception cref="ChannelProtocolException">The peer went away; the connection is closed.</exception>
    /// <exception cref="ObjectDisposedException">The channel or the handle was disposed.</exception>
    public long SendBuffer(DmaBufHandle buffer, ulong userData = 0, bool transient = false)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        DmaBuffer b = buffer.Buffer;
        LinuxBuffer linux = b.GetLinuxBuffer();
        long sequence;
        bool withFd;
        DmaBufHandle? registration = null;
        lock (_stateLock)
        {
            ThrowIfClosedLocked();
            sequence = ++_nextSequence;
            withFd = transient || !_shared.ContainsKey(b.Id);
            if (withFd && !transient)
            {
                registration = buffer.Duplicate();
                _shared.Add(b.Id, registration);
            }

            _outstanding.Add((b.Id, sequence), false);
        }

        MessageFlags flags = withFd ? MessageFlags.FdAttached : MessageFlags.None;
        if (transient)
        {
            flags |= MessageFlags.Transient;
        }

        try
        {
            Send(new WireMessage(MessageType.Buffer, flags, b.Id, sequence, b.Size, userData), withFd ? linux.Fd : null);
        }
        catch
        {
            // Not delivered: the caller keeps the buffer. Undo whatever close has not already dropped.
            bool dropRegistration = false;
            lock (_stateLock)
            {
                _outstanding.Remove((b.Id, sequence));
                if (registration is not null && _shared.TryGetValue(b.Id, out DmaBufHandle? r) && ReferenceEquals(r, registration))
                {
                    _shared.Remove(b.Id);
                    dropRegistration = true;
                }
            }

            if (dropRegistration)
            {
                registration!.Dispose();
            }

            throw;
        }

        lock (_stateLock)
        {
            if (_outstanding.ContainsKey((b.Id, sequence)))
            {
                _outstanding[(b.Id, sequence)] = true;
            }
        }

        return sequence;
    }

    /// <summary>
    /// Tells the peer to drop its registration of <paramref name="bufferId"/> and drops ours. Returns false if the peer
    /// had no registration of it.
    /// </summary>
    /// <exception cref="ChannelProtocolException">The peer went away; the connection is closed.</exception>
    public bool Forget(long bufferId)
    {
        DmaBufHandle? registration;
        lock (_stateLock)
        {
            ThrowIfClosedLocked();
            if (!_shared.Remove(bufferId, out registration))
            {
                return false;
            }
        }

        try
        {
            Send(new WireMessage(MessageType.Forget, BufferId: bufferId), fd: null);
        }
        finally
        {
            registration.Dispose();
        }

        return true;
    }

    /// <summary>Forgets every buffer registered with the peer (see <see cref="Forget"/>); returns how many.</summary>
    public int ForgetAll()
    {
        long[] ids;
        lock (_stateLock)
        {
            ids = [.. _shared.Keys];
        }

        int n = 0;
        foreach (long id in ids)
        {
            if (Forget(id))
            {
                n++;
            }
        }

        return n;
    }

    /// <summary>Tells the peer we hold <paramref name="received"/> (mapped, queued, whatever the application means).</summary>
    /// <exception cref="ArgumentException">The buffer came on another channel.</exception>
    /// <exception cref="ChannelProtocolException">The peer went away; the connection is closed.</exception>
    public void Acknowledge(ReceivedBuffer received, ulong userData = 0)
    {
        ArgumentNullException.ThrowIfNull(received);
        if (!ReferenceEquals(received.Channel, this))
        {
            throw new ArgumentException($"{received} came on another channel.", nameof(received));
        }

        lock (_stateLock)
        {
            ThrowIfClosedLocked();
        }

        Send(new WireMessage(MessageType.Ack, BufferId: received.RemoteBufferId, Sequence: received.Sequence, UserData: userData), fd: null);
    }

    /// <summary>Sends a 16-byte ping and waits for the 16-byte pong: the bare round trip of this connection.</summary>
    /// <exception cref="ChannelProtocolException">The peer broke the protocol or went away; the connection is closed.</exception>
    /// <exception cref="TimeoutException">No pong within <paramref name="timeout"/>; the connection stays open.</exception>
    public void Ping(TimeSpan? timeout = null)
    {
        lock (_receiveLock)
        {
            lock (_stateLock)
            {
                ThrowIfClosedLocked();
            }

            Send(new WireMessage(MessageType.Ping), fd: null);
            while (true)
            {
                ChannelMessage? m = ReceiveOne(timeout ?? Timeout.InfiniteTimeSpan);
                if (ReferenceEquals(m, s_pong))
                {
                    return;
                }

                if (m is null)
                {
                    throw new ChannelProtocolException(ChannelErrorReason.PeerClosed, "The peer said goodbye before answering the ping.");
                }

                _pending.Enqueue(m);
            }
        }
    }

    /// <summary>
    /// Waits for the next message: a <see cref="ReceivedBuffer"/>, a <see cref="BufferAcknowledged"/> or a
    /// <see cref="BufferReleased"/>. Pings are answered, forgets and goodbyes handled, on the way. Returns null when the
    /// connection has ended cleanly (the peer said goodbye and closed, or it was closed here).
    /// </summary>
    /// <exception cref="ChannelProtocolException">The peer broke the protocol or died; the connection is closed.</exception>
    public ChannelMessage? Receive() => Receive(Timeout.InfiniteTimeSpan);

    /// <summary>As <see cref="Receive()"/>, waiting at most <paramref name="timeout"/>.</summary>
    /// <exception cref="TimeoutException">Nothing arrived in time; the connection stays open.</exception>
    /// <exception cref="ChannelProtocolException">The peer broke the protocol or died; the connection is closed.</exception>
    public ChannelMessage? Receive(TimeSpan timeout)
    {
        lock (_receiveLock)
        {
            if (_pending.TryDequeue(out ChannelMessage? queued))
            {
                return queued;
            }

            while (true)
            {
                ChannelMessage? m = ReceiveOne(timeout);
                if (!ReferenceEquals(m, s_pong))
                {
                    return m;
                }
            }
        }
    }

    /// <summary>Says goodbye to the peer (if the connection is open) and closes it, releasing everything it held.</summary>
    public void Dispose()
    {
        lock (_stateLock)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
        }

        if (!IsClosed)
        {
            try
            {
                Send(new WireMessage(MessageType.Goodbye), fd: null);
            }
            catch (Exception e) when (e is ChannelProtocolException or LinuxErrorException or ObjectDisposedException)
            {
                // The peer is gone already; closing is all that is left.
            }
        }

        Close(ChannelErrorReason.None);
    }

    /// <inheritdoc/>
    public override string ToString() => $"buffer channel to pid {Peer.ProcessId}{(IsClosed ? " (closed)" : "")}";

    /// <summary>Sends the release of <paramref name="received"/>, if the connection is still open.</summary>
    internal void SendReleaseQuietly(ReceivedBuffer received)
    {
        if (IsClosed)
        {
            return;
        }

        try
        {
            Send(new WireMessage(MessageType.Release, BufferId: received.RemoteBufferId, Sequence: received.Sequence), fd: null);
        }
        catch (Exception e) when (e is ChannelProtocolException or LinuxErrorException or ObjectDisposedException)
        {
            // The peer went away; it gets its buffers back by closing.
        }
    }

    private void ThrowIfClosedLocked()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_closed)
        {
            throw new ChannelProtocolException(
                _closeReason == ChannelErrorReason.None ? ChannelErrorReason.PeerClosed : _closeReason, "The connection is closed.");
        }
    }

    /// <summary>Receives and handles one record. Returns a message for the caller, <see cref="s_pong"/>, or null at the end.</summary>
    private ChannelMessage? ReceiveOne(TimeSpan timeout)
    {
        while (true)
        {
            lock (_stateLock)
            {
                if (_closed)
                {
                    return null;
                }
            }

            List<SafeFdHandle> fds = [];
            try
            {
                if (timeout != Timeout.InfiniteTimeSpan && !Interop.Libc.PollReadable(_socket, (int)Math.Min(int.MaxValue, timeout.TotalMilliseconds)))
                {
                    throw new TimeoutException($"Nothing arrived from pid {Peer.ProcessId} within {timeout}.");
                }

                ChannelMessage? m = ReceiveRecord(fds, out bool handled);
                if (!handled)
                {
                    continue;
                }

                return m;
            }
            catch (ChannelProtocolException e)
            {
                Close(e.Reason);
                throw;
            }
            catch (ObjectDisposedException) when (IsClosed)
            {
                return null; // another thread closed the connection while this one waited
            }
            finally
            {
                foreach (SafeFdHandle fd in fds)
                {
                    fd.Dispose(); // whatever was not handed on (a handed-on descriptor is removed from the list)
                }
            }
        }
    }

    /// <summary>
    /// Receives one record and acts on it. <paramref name="handled"/> is false when the record was consumed internally
    /// (forget, goodbye, ping) and the caller should go on receiving.
    /// </summary>
    private unsafe ChannelMessage? ReceiveRecord(List<SafeFdHandle> fds, out bool handled)
    {
        handled = true;
        const int DataSpace = 128;
        byte* data = stackalloc byte[DataSpace];
        int controlSpace = Interop.Libc.CMSG_SPACE(4 * sizeof(int));
        byte* control = stackalloc byte[controlSpace];
        new Span<byte>(control, controlSpace).Clear();
        var iov = new Interop.Libc.iovec { iov_base = data, iov_len = DataSpace };
        var msg = new Interop.Libc.msghdr
        {
            msg_iov = &iov,
            msg_iovlen = 1,
            msg_control = control,
            msg_controllen = (nuint)controlSpace,
        };

        nint n;
        bool resetSeen = false;
        while ((n = Interop.Libc.recvmsg(_socket, &msg, Interop.Libc.MSG_CMSG_CLOEXEC)) < 0)
        {
            int errno = Interop.LastErrno;
            if (errno == Interop.Libc.EINTR)
            {
                continue;
            }

            if (errno == Interop.Libc.ECONNRESET && !resetSeen)
            {
                // A Unix socket reports ECONNRESET once when the peer closed with messages of ours still unread; its
                // own messages (a goodbye, say) are still queued behind the error. Read on: what decides between a
                // clean end and a dead peer is whether the goodbye is among them.
                resetSeen = true;
                continue;
            }

            if (errno is Interop.Libc.ECONNRESET or Interop.Libc.ENOTCONN or Interop.Libc.EBADF)
            {
                lock (_stateLock)
                {
                    if (_closed)
                    {
                        return null; // closed here while we waited
                    }
                }

                throw PeerGone($"recvmsg: {Interop.Libc.ErrnoName(errno)}");
            }

            throw Interop.GetExceptionForErrno(errno, "recvmsg");
        }

        CollectFds(&msg, fds);
        Interlocked.Add(ref _fdsReceived, fds.Count);
        if (n == 0 && fds.Count == 0)
        {
            lock (_stateLock)
            {
                if (_closed || _goodbyeReceived)
                {
                    Close(ChannelErrorReason.None);
                    return null;
                }
            }

            throw PeerGone("the connection ended");
        }

        Interlocked.Increment(ref _messagesReceived);
        if ((msg.msg_flags & Interop.Libc.MSG_CTRUNC) != 0)
        {
            throw new ChannelProtocolException(
                ChannelErrorReason.SurplusFds, $"The kernel truncated the descriptors that came with a message (MSG_CTRUNC); the {fds.Count} received were closed.");
        }

        if ((msg.msg_flags & Interop.Libc.MSG_TRUNC) != 0)
        {
            throw new ChannelProtocolException(ChannelErrorReason.WrongSize, $"A message longer than {DataSpace} bytes arrived (the longest message is {WireFormat.MaxMessageSize}).");
        }

        WireMessage m = WireFormat.Decode(new ReadOnlySpan<byte>(data, (int)n), fds.Count);
        switch (m.Type)
        {
            case MessageType.Buffer:
                return OnBuffer(m, fds);
            case MessageType.Ack:
                lock (_stateLock)
                {
                    if (!_outstanding.ContainsKey((m.BufferId, m.Sequence)))
                    {
                        throw new ChannelProtocolException(
                            ChannelErrorReason.UnknownBufferId, $"Acknowledgement of buffer {m.BufferId} #{m.Sequence}, which is not out with the peer.");
                    }
                }

                return new BufferAcknowledged(m.BufferId, m.Sequence, m.UserData);
            case MessageType.Release:
                return OnRelease(m);
            case MessageType.Forget:
                DmaBufHandle? dropped;
                lock (_stateLock)
                {
                    if (!_registered.Remove(m.BufferId, out dropped))
                    {
                        throw new ChannelProtocolException(ChannelErrorReason.UnknownBufferId, $"Forget of buffer {m.BufferId}, which is not registered.");
                    }
                }

                dropped.Dispose();
                handled = false;
                return null;
            case MessageType.Ping:
                Send(new WireMessage(MessageType.Pong), fd: null);
                handled = false;
                return null;
            case MessageType.Pong:
                return s_pong;
            case MessageType.Goodbye:
                lock (_stateLock)
                {
                    _goodbyeReceived = true;
                }

                handled = false;
                return null;
            default:
                throw new UnreachableException();
        }
    }

    private ReceivedBuffer OnBuffer(WireMessage m, List<SafeFdHandle> fds)
    {
        bool transient = m.Flags.HasFlag(MessageFlags.Transient);
        if (fds.Count == 0)
        {
            DmaBufHandle delivered;
            lock (_stateLock)
            {
                if (!_registered.TryGetValue(m.BufferId, out DmaBufHandle? registration))
                {
                    throw new ChannelProtocolException(
                        ChannelErrorReason.UnknownBufferId, $"Buffer {m.BufferId} was never sent with its descriptor on this connection (or was forgotten).");
                }

                if (registration.Buffer.Size != m.Size)
                {
                    throw new ChannelProtocolException(
                        ChannelErrorReason.BadBufferSize, $"Buffer {m.BufferId} was registered with {registration.Buffer.Size} bytes; now the peer claims {m.Size}.");
                }

                delivered = registration.Duplicate();
            }

            return new ReceivedBuffer(this, m.BufferId, m.Sequence, m.UserData, delivered, carriedFd: false, transient: false);
        }

        lock (_stateLock)
        {
            if (!transient && _registered.ContainsKey(m.BufferId))
            {
                throw new ChannelProtocolException(
                    ChannelErrorReason.DuplicateBufferId, $"Buffer {m.BufferId} is registered already; its descriptor came again.");
            }

            if (!transient && _registered.Count >= _maxRegistered)
            {
                throw new ChannelProtocolException(
                    ChannelErrorReason.TooManyBuffers, $"The peer has {_registered.Count} buffers registered; at most {_maxRegistered} are allowed.");
            }
        }

        SafeFdHandle fd = fds[0];
        fds.Clear(); // Import takes it over
        DmaBufHandle imported;
        try
        {
            imported = _imports.Import(fd, m.Size);
        }
        catch (BufferImportException e)
        {
            throw new ChannelProtocolException(e.Reason, $"Buffer {m.BufferId}: {e.Message}", e);
        }

        if (transient)
        {
            return new ReceivedBuffer(this, m.BufferId, m.Sequence, m.UserData, imported, carriedFd: true, transient: true);
        }

        DmaBufHandle delivery = imported.Duplicate();
        bool registered = false;
        lock (_stateLock)
        {
            if (!_closed)
            {
                _registered.Add(m.BufferId, imported);
                registered = true;
            }
        }

        if (!registered)
        {
            imported.Dispose();
        }
        return new ReceivedBuffer(this, m.BufferId, m.Sequence, m.UserData, delivery, carriedFd: true, transient: false);
    }

    private BufferReleased OnRelease(WireMessage m)
    {
        bool lastOfBuffer;
        lock (_stateLock)
        {
            if (!_outstanding.Remove((m.BufferId, m.Sequence)))
            {
                throw new ChannelProtocolException(
                    ChannelErrorReason.UnknownBufferId, $"Release of buffer {m.BufferId} #{m.Sequence}, which is not out with the peer.");
            }

            lastOfBuffer = !_outstanding.Keys.Any(k => k.Id == m.BufferId);
        }

        bool returned = lastOfBuffer && _pool is not null && _pool.Return(m.BufferId);
        return new BufferReleased(m.BufferId, m.Sequence, returned);
    }

    private static unsafe void CollectFds(Interop.Libc.msghdr* msg, List<SafeFdHandle> fds)
    {
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
    }

    private unsafe void Send(in WireMessage message, SafeFdHandle? fd)
    {
        byte* data = stackalloc byte[WireFormat.MaxMessageSize];
        int length = WireFormat.Encode(message, new Span<byte>(data, WireFormat.MaxMessageSize));
        int controlSpace = Interop.Libc.CMSG_SPACE(sizeof(int));
        byte* control = stackalloc byte[controlSpace];
        new Span<byte>(control, controlSpace).Clear();
        var iov = new Interop.Libc.iovec { iov_base = data, iov_len = (nuint)length };
        var msg = new Interop.Libc.msghdr { msg_iov = &iov, msg_iovlen = 1 };
        bool added = false;
        try
        {
            if (fd is not null)
            {
                fd.DangerousAddRef(ref added);
                var header = (Interop.Libc.cmsghdr*)control;
                header->cmsg_len = (nuint)Interop.Libc.CMSG_LEN(sizeof(int));
                header->cmsg_level = Interop.Libc.SOL_SOCKET;
                header->cmsg_type = Interop.Libc.SCM_RIGHTS;
                *(int*)(control + Interop.Libc.CMSG_DATA_OFFSET) = (int)fd.DangerousGetHandle();
                msg.msg_control = control;
                msg.msg_controllen = (nuint)controlSpace;
            }

            lock (_sendLock)
            {
                while (Interop.Libc.sendmsg(_socket, &msg, Interop.Libc.MSG_NOSIGNAL) < 0)
                {
                    int errno = Interop.LastErrno;
                    if (errno == Interop.Libc.EINTR)
                    {
                        continue;
                    }

                    if (errno is Interop.Libc.EPIPE or Interop.Libc.ECONNRESET or Interop.Libc.ENOTCONN or Interop.Libc.EBADF)
                    {
                        ChannelProtocolException e = PeerGone($"sendmsg: {Interop.Libc.ErrnoName(errno)}");
                        Close(e.Reason);
                        throw e;
                    }

                    throw Interop.GetExceptionForErrno(errno, "sendmsg");
                }
            }
        }
        catch (ObjectDisposedException) when (IsClosed)
        {
            throw new ChannelProtocolException(ChannelErrorReason.PeerClosed, "The connection closed while sending.");
        }
        finally
        {
            if (added)
            {
                fd!.DangerousRelease();
            }
        }

        Interlocked.Increment(ref _messagesSent);
        if (fd is not null)
        {
            Interlocked.Increment(ref _fdsSent);
        }
    }

    private ChannelProtocolException PeerGone(string how)
    {
        int ours;
        int theirs;
        lock (_stateLock)
        {
            ours = _outstanding.Count;
            theirs = _registered.Count;
        }

        return new ChannelProtocolException(
            ChannelErrorReason.PeerClosed,
            $"Peer pid {Peer.ProcessId} went away without saying goodbye ({how}) while holding {ours} of our deliveries " +
            $"and {theirs} registered buffers of its own; they were released.");
    }

    /// <summary>Closes the connection once, dropping every reference it held and returning undelivered buffers to the pool.</summary>
    private void Close(ChannelErrorReason reason)
    {
        List<DmaBufHandle> drop = [];
        HashSet<long> toPool = [];
        List<ChannelMessage> pending;
        lock (_stateLock)
        {
            if (_closed)
            {
                return;
            }

            _closed = true;
            _closeReason = reason;
            drop.AddRange(_shared.Values);
            drop.AddRange(_registered.Values);
            foreach (((long id, long _), bool delivered) in _outstanding)
            {
                if (delivered)
                {
                    toPool.Add(id);
                }
            }

            _shared.Clear();
            _registered.Clear();
            _outstanding.Clear();
            pending = [.. _pending];
            _pending.Clear();
        }

        _ = Interop.Libc.shutdown(_socket, Interop.Libc.SHUT_RDWR);
        _socket.Dispose();
        foreach (DmaBufHandle h in drop)
        {
            h.Dispose();
        }

        foreach (ChannelMessage m in pending)
        {
            (m as IDisposable)?.Dispose();
        }

        if (_pool is not null)
        {
            foreach (long id in toPool)
            {
                _pool.Return(id);
            }
        }
    }

    /// <summary>Marks a pong inside the receive loop; never returned to callers.</summary>
    private sealed class PongMessage : ChannelMessage;
}

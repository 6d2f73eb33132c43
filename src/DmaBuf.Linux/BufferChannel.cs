// Ownership: a channel owns its socket. Its ledger holds, for each buffer whose descriptor it has sent (registered with
// the peer), one reference until Forget or close, as the peer holds the descriptor; and for each buffer id the peer
// registered with us one reference to the imported buffer until the peer forgets it or the connection closes. Whatever
// the way a connection ends (Dispose, a protocol error, a missed deadline, the peer dying), all of these are dropped,
// the socket is shut down and closed, and buffers the peer had not released go back to the pool.
namespace DmaBuf.Linux;

/// <summary>
/// A connection that passes buffers between two processes with no copy: a <c>SOCK_SEQPACKET</c> Unix socket. The first
/// send of a buffer carries its descriptor (<c>SCM_RIGHTS</c>); later sends carry only its id. The receiver imports
/// through an <see cref="ImportCache"/>, acknowledges, and releases, which returns the buffer to the sender's pool.
/// </summary>
/// <remarks>
/// <para><b>Layers.</b> A socket layer (records and the descriptors that come with them, deadlines), a socket-free
/// ledger (what each side holds, what is outstanding, sequence numbers, budgets, the send order), and this class, the
/// protocol between them. Wire format: docs/wire-format.md.</para>
/// <para><b>Untrusted peer.</b> Every message is checked: size (a zero-length record is refused, never taken for the
/// end), magic, version, type, flags, the descriptors that came with it (surplus ones, <c>MSG_CTRUNC</c>), buffer ids,
/// the connection's budgets, and each descriptor (memfd sealed against shrinking, or dma-buf; big enough). Nothing may
/// follow the peer's goodbye. A violation throws <see cref="ChannelProtocolException"/> with the reason and closes this
/// connection only, releasing every descriptor and buffer it held. The peer's uid is checked when the channel is made.</para>
/// <para><b>Deadlines.</b> Every send returns within <see cref="BufferChannelOptions.SendTimeout"/> (or closes the
/// connection with <see cref="ChannelErrorReason.SendTimeout"/>), <see cref="Receive(TimeSpan)"/> within its timeout, and
/// <see cref="Dispose"/> never waits for the peer: it says goodbye only if that can be done at once, then shuts the
/// socket down, which wakes every thread blocked on it.</para>
/// <para><b>Threads.</b> One thread receives at a time; sends may come from any thread, and are ordered by the ledger
/// (the peer never sees an id before its descriptor). Release and acknowledge may be sent while another thread is
/// blocked in <see cref="Receive()"/>.</para>
/// </remarks>
public sealed partial class BufferChannel : IDisposable
{
    private static readonly PongMessage s_pong = new();
    private static readonly TimedOutMessage s_timedOut = new();
    private static readonly Func<DmaBufHandle, DmaBufHandle> s_duplicate = h => h.Duplicate();

    private readonly ChannelSocket _socket;
    private readonly ChannelLedger<DmaBufHandle> _ledger;
    private readonly ImportCache _imports;
    private readonly BufferPool? _pool;
    private readonly TimeSpan _sendTimeout;
    private readonly bool _acknowledgeOnReceipt;
#pragma warning disable CA2213 // never disposed: it has no wait handle (AvailableWaitHandle is not used), and a receiver may release it after close
    private readonly ReceiveGate _receiveGate = new(); // one receiver at a time; async receivers hold it across awaits
#pragma warning restore CA2213
    /// <summary>How many messages <see cref="Ping"/> holds for later receives while it waits for its pong; more closes the connection.</summary>
    private const int MaxPendingWhilePinging = 4096;

    private readonly Queue<ChannelMessage> _pending = new(); // under its own lock: close drains it from any thread
    private bool _pendingClosed; // under _pending: close drained the queue; nothing may be queued after it
    private int _pendingCount;   // written under _pending; read without it by the receive gate's holder, the only one who queues
    private int _disposed;
    private long _messagesSent;
    private long _messagesReceived;
    private long _fdsSent;
    private long _fdsReceived;

    private BufferChannel(SafeFdHandle socket, BufferChannelOptions options, PeerCredentials peer)
    {
        _socket = new ChannelSocket(socket);
        _ledger = new ChannelLedger<DmaBufHandle>(options.MaxRegisteredBuffers, options.MaxResidentBytes);
        _imports = options.ImportCache ?? ImportCache.Shared;
        _pool = options.ReturnTo;
        _sendTimeout = options.SendTimeout;
        _acknowledgeOnReceipt = options.AcknowledgeOnReceipt;
        _wait = options.Wait;
        _wantsRing = options.Transport == ChannelTransport.Ring;
        _spinBudgetTicks = (long)(options.SpinBudget.TotalSeconds * System.Diagnostics.Stopwatch.Frequency);
        Peer = peer;
    }

    /// <summary>The peer's credentials, checked when the channel was made.</summary>
    public PeerCredentials Peer { get; }

    /// <summary>Whether the connection is closed (disposed, failed, or ended by the peer).</summary>
    public bool IsClosed => _ledger.IsClosed;

    /// <summary>Why the connection closed; <see cref="ChannelErrorReason.None"/> if it is open or ended cleanly.</summary>
    public ChannelErrorReason CloseReason => _ledger.CloseReason;

    /// <summary>Our buffers the peer holds a descriptor for.</summary>
    public int SharedBuffers => _ledger.SharedCount;

    /// <summary>Deliveries the peer has not released yet.</summary>
    public int OutstandingDeliveries => _ledger.OutstandingCount;

    /// <summary>The peer's buffers registered with us (each holds a reference to the imported buffer).</summary>
    public int RegisteredBuffers => _ledger.RegisteredCount;

    /// <summary>Counters.</summary>
    public ChannelStatistics Statistics => new(
        Interlocked.Read(ref _messagesSent), Interlocked.Read(ref _messagesReceived),
        Interlocked.Read(ref _fdsSent), Interlocked.Read(ref _fdsReceived));

    /// <summary>The ledger (for tests and the next transport).</summary>
    internal ChannelLedger<DmaBufHandle> Ledger => _ledger;

    /// <summary>Makes a connected pair in this process (<c>socketpair</c>).</summary>
    public static (BufferChannel First, BufferChannel Second) CreatePair(BufferChannelOptions? first = null, BufferChannelOptions? second = null)
    {
        (SafeFdHandle a, SafeFdHandle b) = Interop.Libc.SocketPair(Interop.Libc.SOCK_SEQPACKET);
        BufferChannel? channelA = null;
        BufferChannel? channelB = null;
        try
        {
            // Both halves first, so neither waits for a peer that has not been made yet.
            channelA = Make(a, first, setUpRing: false);
            channelB = Make(b, second, setUpRing: false);
            if (channelA._wantsRing != channelB._wantsRing)
            {
                throw new ArgumentException("Both channels of a pair must use the same transport.", nameof(second));
            }

            if (channelA._wantsRing)
            {
                channelA.SendRingSetup();
                channelB.SendRingSetup();
                channelA.ReceiveRingSetup(Deadline.After(channelA._sendTimeout));
                channelB.ReceiveRingSetup(Deadline.After(channelB._sendTimeout));
            }

            return (channelA, channelB);
        }
        catch
        {
            channelA?.Close(ChannelErrorReason.LocalFailure);
            channelB?.Close(ChannelErrorReason.LocalFailure);
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
#pragma warning disable CA2000 // closed on a failed connect; FromSocket owns it after, closing it on every failure
        SafeFdHandle socket = Interop.Libc.UnixSocket(Interop.Libc.SOCK_SEQPACKET);
#pragma warning restore CA2000
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
        return Make(socket, options, setUpRing: true);
    }

    /// <summary>
    /// An accepted connection's first half: the peer's credentials checked and, on the ring transport, our half of the
    /// ring's setup sent (<see cref="AwaitsRingSetup"/>; <see cref="FinishRingSetup"/> takes the peer's). Takes the socket.
    /// </summary>
    internal static BufferChannel StartAccepted(SafeFdHandle socket, BufferChannelOptions? options)
    {
        BufferChannel channel = Make(socket, options, setUpRing: false);
        if (channel._wantsRing)
        {
            try
            {
                channel.SendRingSetup();
            }
            catch
            {
                channel.Close(ChannelErrorReason.LocalFailure);
                throw;
            }
        }

        return channel;
    }

    /// <summary>The connection's socket (for a listener's wait on several handshakes).</summary>
    internal SafeFdHandle SocketHandle => _socket.Handle;

    /// <summary>The send timeout, which bounds the ring's setup.</summary>
    internal TimeSpan SendTimeout => _sendTimeout;

    private static BufferChannel Make(SafeFdHandle socket, BufferChannelOptions? options, bool setUpRing)
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

            var channel = new BufferChannel(socket, options, peer);
            if (setUpRing && channel._wantsRing)
            {
                try
                {
                    channel.SetUpRing();
                }
                catch
                {
                    channel.Close(ChannelErrorReason.LocalFailure);
                    throw;
                }
            }

            return channel;
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
    /// carries the descriptor and registers nothing (the peer maps it afresh: the "remap" way). Returns within
    /// <see cref="BufferChannelOptions.SendTimeout"/>.
    /// </summary>
    /// <param name="buffer">A Linux-backed buffer (borrowed; the channel takes its own reference if it registers it).</param>
    /// <param name="userData">64 bits of application data the peer sees (a frame number, a checksum).</param>
    /// <param name="transient">Send the descriptor every time and do not register it.</param>
    /// <exception cref="ChannelProtocolException">The peer went away or stopped reading; the connection is closed.</exception>
    /// <exception cref="ObjectDisposedException">The channel or the handle was disposed.</exception>
    public long SendBuffer(DmaBufHandle buffer, ulong userData = 0, bool transient = false) =>
        SendBufferCore(buffer, userData, transient, fence: null, Deadline.After(_sendTimeout), onlyIfRoom: false, out _);

    /// <summary>
    /// Sends <paramref name="buffer"/> as <see cref="SendBuffer"/> does (registering it on its first send), with
    /// <paramref name="fence"/>: the message carries a duplicate of the sync_file's descriptor (<c>SCM_RIGHTS</c>), and
    /// the peer's <see cref="ReceivedBuffer.Fence"/> is that sync_file, to wait for before reading the frame (the
    /// writer's work signals it). Returns the delivery's sequence number within
    /// <see cref="BufferChannelOptions.SendTimeout"/>.
    /// </summary>
    /// <param name="buffer">A Linux-backed buffer (borrowed).</param>
    /// <param name="fence">The sync_file (borrowed: the caller keeps and closes its own descriptor).</param>
    /// <param name="userData">64 bits of application data the peer sees.</param>
    /// <exception cref="NotSupportedException">The channel uses the ring transport, which carries no fences.</exception>
    /// <exception cref="ChannelProtocolException">The peer went away or stopped reading; the connection is closed.</exception>
    /// <exception cref="ObjectDisposedException">The channel, the handle or the sync_file was disposed.</exception>
    public long SendBufferWithFence(DmaBufHandle buffer, KernelSyncFile fence, ulong userData = 0)
    {
        ArgumentNullException.ThrowIfNull(fence);
        ObjectDisposedException.ThrowIf(fence.Descriptor.IsClosed, fence);
        if (_wantsRing)
        {
            throw new NotSupportedException("The ring transport carries no fences: send frames with a fence on a channel that uses the socket transport.");
        }

        return SendBufferCore(buffer, userData, transient: false, fence.Descriptor, Deadline.After(_sendTimeout), onlyIfRoom: false, out _);
    }

    /// <summary>
    /// Sends inside the send order; when <paramref name="onlyIfRoom"/>, first checks that the transport has room now and,
    /// if not, returns -1 having begun nothing (<paramref name="ringFull"/> says whether the ring or the socket is full).
    /// </summary>
    private long SendBufferCore(
        DmaBufHandle buffer, ulong userData, bool transient, SafeFdHandle? fence, Deadline deadline, bool onlyIfRoom, out bool ringFull)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        DmaBuffer b = buffer.Buffer;
        LinuxBuffer linux = b.GetLinuxBuffer();
        ThrowIfDisposed();
        ringFull = false;
        using ChannelLedger<DmaBufHandle>.SendScope order = EnterSend(deadline);
        if (onlyIfRoom && !HasRoomNow(withFd: transient || !_ledger.IsShared(b.Id), out ringFull))
        {
            return -1;
        }

        // Each delivery of a pool buffer holds it, from before the ledger records it (a peer may release a delivery it
        // never got, by its number) until it is released, handed back by close, or its send fails.
        bool held = false;
        switch (_pool?.TakeChannelHold(b.Id))
        {
            case ChannelHold.NotRented:
                throw new InvalidOperationException(
                    $"Buffer {b.Id} belongs to the pool this channel returns buffers to, but is not rented from it: rent it first (another renter may be writing it).");
            case ChannelHold.Held:
                held = true;
                break;
        }

        ChannelLedger<DmaBufHandle>.SendTicket ticket;
        try
        {
            ticket = _ledger.BeginBuffer(b.Id, buffer, transient, s_duplicate);
        }
        catch
        {
            if (held)
            {
                _pool!.UndoChannelHold(b.Id);
            }

            throw;
        }

        MessageFlags flags = ticket.WithFd ? MessageFlags.FdAttached : MessageFlags.None;
        if (transient)
        {
            flags |= MessageFlags.Transient;
        }

        if (fence is not null)
        {
            flags |= MessageFlags.FenceAttached;
        }

        try
        {
            var message = new WireMessage(MessageType.Buffer, flags, b.Id, ticket.Sequence, b.Size, userData);
            SafeFdHandle? fd = ticket.WithFd ? linux.Fd : null;
            if (fence is null)
            {
                Transmit(message, fd, deadline);
            }
            else
            {
                TransmitSocket(message, fd ?? fence, fd is null ? null : fence, deadline); // the buffer's descriptor first, then the fence's
            }
        }
        catch
        {
            _ledger.AbortBuffer(ticket, out bool stillOut)?.Dispose(); // not delivered: the caller keeps the buffer
            if (held && stillOut)
            {
                _pool!.UndoChannelHold(b.Id);
            }

            throw;
        }

        if (_ledger.CompleteBuffer(ticket) && held)
        {
            // Sent, but the connection closed before the delivery was recorded: close let go of the other deliveries
            // the peer had not released, and this one goes the same way (nobody will release it now).
            _pool!.DropChannelHold(b.Id);
        }

        return ticket.Sequence;
    }

    /// <summary>
    /// Tells the peer to drop its registration of <paramref name="bufferId"/> and drops ours. Returns false if the peer
    /// had no registration of it.
    /// </summary>
    /// <exception cref="ChannelProtocolException">The peer went away or stopped reading; the connection is closed.</exception>
    public bool Forget(long bufferId)
    {
        ThrowIfDisposed();
        Deadline deadline = Deadline.After(_sendTimeout);
        DmaBufHandle? registration;
        using (EnterSend(deadline))
        {
            registration = _ledger.BeginForget(bufferId);
            if (registration is null)
            {
                return false;
            }

            try
            {
                Transmit(new WireMessage(MessageType.Forget, BufferId: bufferId), fd: null, deadline);
            }
            catch
            {
                registration.Dispose();
                throw;
            }
        }

        registration.Dispose();
        return true;
    }

    /// <summary>Forgets every buffer registered with the peer (see <see cref="Forget"/>); returns how many.</summary>
    public int ForgetAll()
    {
        int n = 0;
        foreach (long id in _ledger.SharedIds())
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
    /// <exception cref="ObjectDisposedException">The channel, or the delivery (whose release may already be on its way), was disposed.</exception>
    /// <exception cref="ChannelProtocolException">The peer went away or stopped reading; the connection is closed.</exception>
    public void Acknowledge(ReceivedBuffer received, ulong userData = 0)
    {
        ArgumentNullException.ThrowIfNull(received);
        if (!ReferenceEquals(received.Channel, this))
        {
            throw new ArgumentException($"{received} came on another channel.", nameof(received));
        }

        ThrowIfDisposed();
        Deadline deadline = Deadline.After(_sendTimeout);
        using (EnterSend(deadline))
        {
            // Checked inside the send order: a delivery's Dispose marks it before it enters the order to send the
            // release, so one not marked here has no release out yet, and an acknowledgement never follows its release
            // (the peer would take it for one of nothing it sent).
            ObjectDisposedException.ThrowIf(received.IsDisposed, received);
            _ledger.BeginControl();
            Transmit(new WireMessage(MessageType.Ack, BufferId: received.RemoteBufferId, Sequence: received.Sequence, UserData: userData), fd: null, deadline);
        }
    }

    /// <summary>Sends a 16-byte ping and waits for the 16-byte pong: the bare round trip of this connection.</summary>
    /// <exception cref="ChannelProtocolException">The peer broke the protocol or went away; the connection is closed.</exception>
    /// <exception cref="TimeoutException">No pong within <paramref name="timeout"/>; the connection stays open.</exception>
    public void Ping(TimeSpan? timeout = null)
    {
        Deadline deadline = Deadline.After(timeout ?? Timeout.InfiniteTimeSpan);
        EnterReceive(deadline);
        try
        {
            PingLocked(deadline);
        }
        catch (ChannelProtocolException) when (Volatile.Read(ref _disposed) != 0 && _ledger.CloseReason == ChannelErrorReason.None)
        {
            throw new ObjectDisposedException(ToString(), "The channel was disposed while the ping waited."); // closed here, not by the peer
        }
        finally
        {
            _receiveGate.Exit();
        }
    }

    /// <summary>The ping, inside the receive gate.</summary>
    private void PingLocked(Deadline deadline)
    {
        ThrowIfDisposed();
        SendControl(new WireMessage(MessageType.Ping), Deadline.Earlier(deadline, Deadline.After(_sendTimeout)));
        while (true)
        {
            ChannelMessage? m = ReceiveOne(deadline);
            if (ReferenceEquals(m, s_pong))
            {
                return;
            }

            if (ReferenceEquals(m, s_timedOut))
            {
                throw new TimeoutException($"No pong came from pid {Peer.ProcessId} in time.");
            }

            if (m is null)
            {
                ThrowIfDisposed(); // closed here, not by the peer
                throw _ledger.CloseReason == ChannelErrorReason.None
                    ? new ChannelProtocolException(ChannelErrorReason.PeerClosed, "The peer said goodbye before answering the ping.")
                    : _ledger.ClosedException();
            }

            if (Volatile.Read(ref _pendingCount) >= MaxPendingWhilePinging)
            {
                (m as IDisposable)?.Dispose();
                throw Fail(
                    ChannelErrorReason.TooManyBuffers,
                    $"Pid {Peer.ProcessId} sent more than {MaxPendingWhilePinging} messages while our ping waited for its pong; they would be held without bound.");
            }

            bool queued;
            lock (_pending)
            {
                queued = !_pendingClosed;
                if (queued)
                {
                    _pending.Enqueue(m);
                    Volatile.Write(ref _pendingCount, _pending.Count);
                }

                AssertPendingLocked();
            }

            if (!queued)
            {
                (m as IDisposable)?.Dispose(); // closed meanwhile: nobody will receive it
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

    /// <summary>As <see cref="Receive()"/>, returning within <paramref name="timeout"/>.</summary>
    /// <exception cref="TimeoutException">Nothing arrived in time; the connection stays open.</exception>
    /// <exception cref="ChannelProtocolException">The peer broke the protocol or died; the connection is closed.</exception>
    public ChannelMessage? Receive(TimeSpan timeout)
    {
        Deadline deadline = Deadline.After(timeout);
        EnterReceive(deadline);
        try
        {
            ChannelMessage? m = ReceiveLocked(deadline);
            return ReferenceEquals(m, s_timedOut) ? throw new TimeoutException($"Nothing arrived from pid {Peer.ProcessId} in time.") : m;
        }
        finally
        {
            _receiveGate.Exit();
        }
    }

    /// <summary>The next message for the caller (a queued one first), <see cref="s_timedOut"/>, or null at the end; inside the receive gate.</summary>
    private ChannelMessage? ReceiveLocked(Deadline deadline)
    {
        if (Volatile.Read(ref _pendingCount) != 0) // only Ping queues, inside the gate we hold: no lock to see none
        {
            lock (_pending)
            {
                AssertPendingLocked();
                if (_pending.TryDequeue(out ChannelMessage? queued))
                {
                    Volatile.Write(ref _pendingCount, _pending.Count);
                    return queued;
                }
            }
        }

        while (true)
        {
            ChannelMessage? m = ReceiveOne(deadline);
            if (!ReferenceEquals(m, s_pong))
            {
                return m;
            }
        }
    }

    /// <summary>
    /// Says goodbye to the peer if that can be done at once (no other send in progress, room in the socket), then shuts
    /// the socket down and closes the connection, releasing everything it held. Never waits for the peer.
    /// </summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        if (_ledger.TryEnterSendNow(out ChannelLedger<DmaBufHandle>.SendScope order))
        {
            using (order)
            {
                if (_ring is not null)
                {
                    if (_ledger.BeginGoodbye())
                    {
                        PublishGoodbyeNow();
                    }
                }
                else if (_ledger.BeginGoodbye())
                {
                    Span<byte> data = stackalloc byte[WireFormat.HeaderSize];
                    int length = WireFormat.Encode(new WireMessage(MessageType.Goodbye), data);
                    try
                    {
                        if (_socket.Send(data[..length], null, Deadline.Now) == SendStatus.Sent)
                        {
                            Interlocked.Increment(ref _messagesSent);
                        }
                    }
                    catch (Exception e) when (e is LinuxErrorException or ObjectDisposedException)
                    {
                        // The peer is gone already; closing is all that is left.
                    }
                }
            }
        }

        Close(ChannelErrorReason.None);
    }

    /// <inheritdoc/>
    public override string ToString() => $"buffer channel to pid {Peer.ProcessId}{(IsClosed ? " (closed)" : "")}";

    /// <summary>Sends the release of <paramref name="received"/>, if the connection is still open; never throws.</summary>
    internal void SendReleaseQuietly(ReceivedBuffer received)
    {
        if (received.HeldBytes > 0)
        {
            _ledger.ReleaseTransient(received.HeldBytes);
        }

        if (IsClosed)
        {
            return;
        }

        try
        {
            SendControl(new WireMessage(MessageType.Release, BufferId: received.RemoteBufferId, Sequence: received.Sequence), Deadline.After(_sendTimeout));
        }
        catch (Exception e) when (e is ChannelProtocolException or LinuxErrorException or ObjectDisposedException)
        {
            // The peer went away or stopped reading (the connection is closed now); it gets its buffers back by closing.
        }
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);

    private void EnterReceive(Deadline deadline)
    {
        if (!_receiveGate.Enter(deadline))
        {
            throw new TimeoutException($"Another thread was receiving from pid {Peer.ProcessId} for the whole timeout.");
        }
    }

    /// <summary>Enters the ledger's send order; a missed deadline closes the connection.</summary>
    private ChannelLedger<DmaBufHandle>.SendScope EnterSend(Deadline deadline)
    {
        try
        {
            return _ledger.EnterSend(deadline);
        }
        catch (TimeoutException e)
        {
            throw Fail(ChannelErrorReason.SendTimeout, $"No send to pid {Peer.ProcessId} could start within {_sendTimeout}: {e.Message}");
        }
    }

    /// <summary>Sends a message that is neither a buffer nor a forget, in the send order.</summary>
    private void SendControl(in WireMessage message, Deadline deadline)
    {
        using ChannelLedger<DmaBufHandle>.SendScope order = EnterSend(deadline);
        _ledger.BeginControl();
        Transmit(message, fd: null, deadline);
    }

    /// <summary>Transmits one message inside the send order. Any failure closes the connection and throws.</summary>
    private void Transmit(in WireMessage message, SafeFdHandle? fd, Deadline deadline)
    {
        if (_ring is not null && message.Type is not (MessageType.Ping or MessageType.Pong))
        {
            TransmitRing(message, fd, deadline);
            return;
        }

        TransmitSocket(message, fd, deadline);
    }

    /// <summary>
    /// Inside the send order: whether a message (with a descriptor when <paramref name="withFd"/>) would go out now
    /// without waiting. True also when the connection is closed or the socket hung up: the send then reports it.
    /// </summary>
    private bool HasRoomNow(bool withFd, out bool ringFull)
    {
        ringFull = false;
        try
        {
            if (_ring is ChannelRing ring && ring.Enter())
            {
                try
                {
                    if (!ring.HasRoom())
                    {
                        ringFull = true;
                        return false;
                    }
                }
                catch (ChannelProtocolException e)
                {
                    Close(e.Reason);
                    throw;
                }
                finally
                {
                    ring.Exit();
                }

                if (!withFd)
                {
                    return true;
                }
            }

            return _socket.WritableNow();
        }
        catch (ObjectDisposedException)
        {
            return true; // closed: the send says so
        }
    }

    /// <summary>Transmits one message as a socket record inside the send order. Any failure closes the connection and throws.</summary>
    private void TransmitSocket(in WireMessage message, SafeFdHandle? fd, Deadline deadline) => TransmitSocket(message, fd, null, deadline);

    /// <summary>Transmits one message with up to two descriptors as a socket record inside the send order.</summary>
    private void TransmitSocket(in WireMessage message, SafeFdHandle? fd, SafeFdHandle? second, Deadline deadline)
    {
        Span<byte> data = stackalloc byte[WireFormat.MaxMessageSize];
        int length = WireFormat.Encode(message, data);
        SendStatus status;
        try
        {
            status = _socket.Send(data[..length], fd, second, deadline);
        }
        catch (ObjectDisposedException) when (IsClosed)
        {
            throw _ledger.ClosedException();
        }
        catch (LinuxErrorException e)
        {
            throw Fail(ChannelErrorReason.LocalFailure, $"Sending to pid {Peer.ProcessId} failed: {e.Message}", e);
        }

        switch (status)
        {
            case SendStatus.Sent:
                Interlocked.Increment(ref _messagesSent);
                Interlocked.Add(ref _fdsSent, (fd is null ? 0 : 1) + (second is null ? 0 : 1));
                if (message.Type is MessageType.Ping or MessageType.Pong)
                {
                    NudgeRingPeer(); // on the ring transport, a peer asleep on its futex does not see the socket
                }

                return;
            case SendStatus.TimedOut:
                throw Fail(ChannelErrorReason.SendTimeout, $"Peer pid {Peer.ProcessId} did not read for {_sendTimeout}; the {message.Type} message was not sent.");
            default:
                if (IsClosed)
                {
                    throw _ledger.ClosedException(); // shut down here while we waited
                }

                throw Fail(ChannelErrorReason.PeerClosed, PeerGoneMessage("sendmsg: the peer closed"));
        }
    }

    /// <summary>Closes the connection for <paramref name="reason"/> and returns the exception to throw.</summary>
    private ChannelProtocolException Fail(ChannelErrorReason reason, string message, Exception? inner = null)
    {
        var e = new ChannelProtocolException(reason, message, inner);
        Close(reason);
        return e;
    }

    /// <summary>
    /// Receives and handles one record. Returns a message for the caller, <see cref="s_pong"/>, <see cref="s_timedOut"/>
    /// when nothing came by <paramref name="deadline"/>, or null at the end.
    /// </summary>
    private ChannelMessage? ReceiveOne(Deadline deadline)
    {
        if (_ring is not null)
        {
            return ReceiveOneRing(deadline);
        }

        Span<byte> data = stackalloc byte[ChannelSocket.MaxRecord];
        while (true)
        {
            if (IsClosed)
            {
                return null;
            }

            ReceiveStatus status;
            ReceivedRecord? record = null;
            string how;
            try
            {
                try
                {
                    status = _socket.Receive(data, deadline, out record, out how);
                }
                catch (ObjectDisposedException) when (IsClosed)
                {
                    return null; // another thread closed the connection while this one waited
                }
                catch (LinuxErrorException e)
                {
                    throw Fail(ChannelErrorReason.LocalFailure, $"Receiving from pid {Peer.ProcessId} failed: {e.Message}", e);
                }

                switch (status)
                {
                    case ReceiveStatus.TimedOut:
                        return s_timedOut;
                    case ReceiveStatus.EndOfStream:
                        if (IsClosed)
                        {
                            return null;
                        }

                        if (_ledger.GoodbyeReceived)
                        {
                            Close(ChannelErrorReason.None);
                            return null;
                        }

                        throw Fail(ChannelErrorReason.PeerClosed, PeerGoneMessage(how));
                }

                Interlocked.Increment(ref _messagesReceived);
                Interlocked.Add(ref _fdsReceived, record!.DescriptorCount);
#pragma warning disable CA2000 // a received buffer is handed to the caller, who owns it; nothing else here is disposable
                ChannelMessage? message = HandleRecord(record, data[..record.Length], deadline);
#pragma warning restore CA2000
                if (message is not null)
                {
                    return message;
                }
            }
            finally
            {
                record?.Dispose(); // every descriptor not handed on
            }
        }
    }

    /// <summary><see cref="Handle"/>, closing the connection on any failure.</summary>
    private ChannelMessage? HandleRecord(ReceivedRecord record, ReadOnlySpan<byte> data, Deadline deadline)
    {
        try
        {
            return Handle(record, data, deadline);
        }
        catch (ChannelProtocolException e)
        {
            // Not in a filter: a filter runs before the finally blocks (and lock exits) of the frames that threw.
            if (ClosedCleanlyUnder(e))
            {
                return null; // the loop sees the connection closed
            }

            throw;
        }
        catch (Exception e) when (e is LinuxErrorException or OutOfMemoryException or DmaMappingException)
        {
            throw Fail(ChannelErrorReason.LocalFailure, $"Handling a message from pid {Peer.ProcessId} failed: {e.Message}", e);
        }
    }

    /// <summary>
    /// Checks and acts on one record; returns the message for the caller, or null when it was consumed here (forget,
    /// goodbye, ping). Descriptors it does not take are closed by the caller disposing the record.
    /// </summary>
    private ChannelMessage? Handle(ReceivedRecord record, ReadOnlySpan<byte> data, Deadline deadline)
    {
        _ledger.CheckReceivable(); // nothing, not even a malformed record, is processed after the peer's goodbye
        if (record.ControlTruncated)
        {
            throw new ChannelProtocolException(
                ChannelErrorReason.SurplusFds, $"The kernel truncated the descriptors that came with a message (MSG_CTRUNC); the {record.DescriptorCount} received were closed.");
        }

        if (record.DataTruncated)
        {
            throw new ChannelProtocolException(
                ChannelErrorReason.WrongSize, $"A message longer than {ChannelSocket.MaxRecord} bytes arrived (the longest message is {WireFormat.MaxMessageSize}).");
        }

        if (record.Length == 0)
        {
            throw new ChannelProtocolException(
                ChannelErrorReason.WrongSize, "A zero-length record arrived while the peer is still connected; it is not an end of stream.");
        }

        WireMessage m = WireFormat.Decode(data, record.DescriptorCount);
        switch (m.Type)
        {
            case MessageType.Buffer:
                return OnBuffer(m, record);
            case MessageType.Ack:
                _ledger.OnAck(m.BufferId, m.Sequence);
                return new BufferAcknowledged(m.BufferId, m.Sequence, m.UserData);
            case MessageType.Release:
                _ledger.OnRelease(m.BufferId, m.Sequence);
                bool returned = _pool is not null && _pool.DropChannelHold(m.BufferId); // the delivery's hold
                return new BufferReleased(m.BufferId, m.Sequence, returned);
            case MessageType.Forget:
                _ledger.OnPeerForget(m.BufferId).Dispose();
                return null;
            case MessageType.Ping:
                // The pong is a send like any other, bounded by the send timeout, not by this receive's deadline: an async
                // receive's first look has none left, and another thread may hold the send order for a moment.
                SendControl(new WireMessage(MessageType.Pong), Deadline.After(_sendTimeout));
                return null;
            case MessageType.Pong:
                return s_pong;
            case MessageType.RingSetup:
                throw new ChannelProtocolException(
                    ChannelErrorReason.RingCorrupt, "The peer set up a control ring; this side uses the socket transport (both sides must choose the same).");
            default: // Goodbye: Decode accepts no other type
                _ledger.OnGoodbye();
                return null;
        }
    }

    /// <summary>Holds a delivery (<see cref="HoldBuffer"/>) and, with <see cref="BufferChannelOptions.AcknowledgeOnReceipt"/>, acknowledges it.</summary>
    private ReceivedBuffer OnBuffer(WireMessage m, ReceivedRecord? record)
    {
        if (_acknowledgeOnReceipt && (m.Flags & (MessageFlags.FdAttached | MessageFlags.FenceAttached)) == 0
            && _ledger.LeaseRegistered(m.BufferId, m.Size) is FrameLease lease)
        {
            // The steady id-only delivery: once the lease holds the frame, the acknowledgement goes out before anything
            // else is done, so the sender waits for the lease and the ring, not for the delivery's object.
            try
            {
                SendAcknowledgement(m.BufferId, m.Sequence);
            }
            catch
            {
                lease.Dispose(lease.Generation);
                throw;
            }

            return new ReceivedBuffer(this, m.BufferId, m.Sequence, m.UserData, handle: null, carriedFd: false, transient: false, lease: lease);
        }

        ReceivedBuffer received = HoldBuffer(m, record);
        if (_acknowledgeOnReceipt)
        {
            AcknowledgeOnReceipt(received);
        }

        return received;
    }

    /// <summary>
    /// The acknowledgement the channel sends for a delivery it now holds (leased, or imported), before the receiver sees
    /// it. A send that fails has closed the connection; the delivery is disposed then, as nobody will receive it.
    /// </summary>
    private void AcknowledgeOnReceipt(ReceivedBuffer received)
    {
        try
        {
            SendAcknowledgement(received.RemoteBufferId, received.Sequence);
        }
        catch
        {
            received.Dispose();
            throw;
        }
    }

    /// <summary>Acknowledges the peer's delivery of buffer <paramref name="id"/> #<paramref name="sequence"/>, in the send order.</summary>
    private void SendAcknowledgement(long id, long sequence) =>
        SendControl(new WireMessage(MessageType.Ack, BufferId: id, Sequence: sequence), Deadline.After(_sendTimeout));

    private ReceivedBuffer HoldBuffer(WireMessage m, ReceivedRecord? record)
    {
        if (!m.Flags.HasFlag(MessageFlags.FenceAttached))
        {
            return OnBuffer(m, record, fence: null);
        }

        // Decode checked the count: the fence's descriptor is the record's last. Untrusted: it must be a sync_file.
        KernelSyncFile fence;
        try
        {
            fence = KernelSyncFile.FromDescriptor(record!.TakeLastDescriptor()); // closes it when it is not one
        }
        catch (ArgumentException e)
        {
            throw new ChannelProtocolException(ChannelErrorReason.NotASyncFile, $"Buffer {m.BufferId} #{m.Sequence}: {e.Message}", e);
        }

        try
        {
            return OnBuffer(m, record, fence);
        }
        catch
        {
            fence.Dispose();
            throw;
        }
    }

    private ReceivedBuffer OnBuffer(WireMessage m, ReceivedRecord? record, KernelSyncFile? fence)
    {
        bool transient = m.Flags.HasFlag(MessageFlags.Transient);
        if (record is null || !m.Flags.HasFlag(MessageFlags.FdAttached))
        {
            FrameLease? lease = _ledger.LeaseRegistered(m.BufferId, m.Size); // the hot path: no new reference, no mapping
            if (lease is not null)
            {
                return new ReceivedBuffer(this, m.BufferId, m.Sequence, m.UserData, handle: null, carriedFd: false, transient: false, lease: lease, fence: fence);
            }

            DmaBufHandle delivered = _ledger.DeliverRegistered(m.BufferId, m.Size, s_duplicate);
            return new ReceivedBuffer(this, m.BufferId, m.Sequence, m.UserData, delivered, carriedFd: false, transient: false, fence: fence);
        }

        _ledger.CheckIncoming(m.BufferId, m.Size, transient); // the budgets, before anything is imported or mapped
        DmaBufHandle imported;
        try
        {
            imported = _imports.Import(record.TakeDescriptor(), m.Size); // Import takes the descriptor over
        }
        catch (BufferImportException e)
        {
            throw new ChannelProtocolException(e.Reason, $"Buffer {m.BufferId}: {e.Message}", e);
        }

        if (transient)
        {
            long held = _ledger.HoldTransient(m.Size) ? m.Size : 0;
            return new ReceivedBuffer(this, m.BufferId, m.Sequence, m.UserData, imported, carriedFd: true, transient: true, held, fence: fence);
        }

        DmaBufHandle delivery;
        FrameMapping? mapping = null;
        FrameLease? firstLease = null;
        try
        {
            delivery = imported.Duplicate();
            mapping = FrameMapping.TryMap(imported); // the registration's one mapping, used by every id-only delivery
            firstLease = mapping?.Lease();
            if (!_ledger.Register(m.BufferId, m.Size, imported, mapping))
            {
                imported.Dispose(); // closed meanwhile: the delivery alone keeps it
                mapping?.Retire();
            }
        }
        catch
        {
            firstLease?.Dispose(firstLease.Generation);
            mapping?.Retire();
            imported.Dispose();
            throw;
        }

        return new ReceivedBuffer(this, m.BufferId, m.Sequence, m.UserData, delivery, carriedFd: true, transient: false, lease: firstLease, fence: fence);
    }

    private string PeerGoneMessage(string how) =>
        $"Peer pid {Peer.ProcessId} went away without saying goodbye ({how}) while holding {_ledger.OutstandingCount} of our deliveries " +
        $"and {_ledger.RegisteredCount} registered buffers of its own; they were released.";

    /// <summary>
    /// Closes the connection once: the ledger first (no send starts after it), then the socket is shut down (waking
    /// every waiter) and closed, then every reference is dropped and undelivered buffers go back to the pool.
    /// </summary>
    /// <returns>Whether this call closed it (false: it was closed already).</returns>
    private bool Close(ChannelErrorReason reason)
    {
        ChannelLedger<DmaBufHandle>.CloseResult? closed = _ledger.Close(reason);
        if (closed is null)
        {
            return false;
        }

        _socket.Shutdown();
        _socket.Dispose();
        CloseAsync();
        CloseRing();
        foreach (FrameMapping mapping in closed.Mappings)
        {
            mapping.Retire(); // unmapped now, or when the last delivery reading through it is disposed
        }

        foreach (DmaBufHandle h in closed.Drop)
        {
            h.Dispose();
        }

        List<ChannelMessage> pending;
        lock (_pending)
        {
            pending = [.. _pending];
            _pending.Clear();
            Volatile.Write(ref _pendingCount, 0);
            _pendingClosed = true;
            AssertPendingLocked();
        }

        foreach (ChannelMessage m in pending)
        {
            (m as IDisposable)?.Dispose();
        }

        if (_pool is not null)
        {
            foreach (long id in closed.Undelivered)
            {
                _pool.DropChannelHold(id);
            }
        }

        return true;
    }

    /// <summary>
    /// Closes the connection for <paramref name="failure"/>, met while handling what the peer sent. True when the
    /// connection was being closed cleanly meanwhile (Dispose on another thread, which may still be saying goodbye):
    /// the failure is then the close's echo (a lookup of a registration the close dropped, a pong that found the
    /// goodbye said or the socket shut), the close stays clean, and the receive ends with null.
    /// </summary>
    private bool ClosedCleanlyUnder(ChannelProtocolException failure)
    {
        if (Volatile.Read(ref _disposed) != 0)
        {
            Close(ChannelErrorReason.None); // our Dispose is under way: its close, not the failure's
            return _ledger.CloseReason == ChannelErrorReason.None;
        }

        return !Close(failure.Reason) && _ledger.CloseReason == ChannelErrorReason.None;
    }

    [System.Diagnostics.Conditional("DEBUG")]
    private void AssertPendingLocked()
    {
        System.Diagnostics.Debug.Assert(Monitor.IsEntered(_pending), "pending queue checked outside its lock");
        System.Diagnostics.Debug.Assert(!_pendingClosed || _pending.Count == 0, "a message queued after close drained the queue");
        System.Diagnostics.Debug.Assert(_pendingCount == _pending.Count, "the pending count differs from the queue");
        foreach (ChannelMessage m in _pending)
        {
            System.Diagnostics.Debug.Assert(m is not PongMessage and not TimedOutMessage, "a pong or a time-out was queued for the application");
        }
    }

    /// <summary>Marks a pong inside the receive loop; never returned to callers.</summary>
    private sealed class PongMessage : ChannelMessage;

    /// <summary>Marks "nothing arrived in time" inside the receive loop; never returned to callers.</summary>
    private sealed class TimedOutMessage : ChannelMessage;
}

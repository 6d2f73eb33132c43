// Ownership: the ledger holds the references it is given. For each of our buffers registered with the peer it holds
// the one BeginBuffer made (by the duplicate function) until Forget, Abort or Close hands it back; for each of the
// peer's registrations it holds the reference Register was given until the peer's Forget or Close hands it back. The
// ledger never disposes anything itself: every method that drops a reference returns it, and the caller disposes it
// outside the lock.
using System.Diagnostics;
using System.Runtime.InteropServices;

namespace DmaBuf.Linux;

/// <summary>
/// The book-keeping of one channel, with no socket in it: which of our buffers the peer holds a descriptor for
/// (shared), which deliveries are out with the peer (outstanding), which of the peer's buffers are registered with us
/// and how many bytes they make us map (the resident budget), the sequence numbers, and whether the conversation is
/// open, said goodbye to, or closed. The socket transport uses it today; a shared-memory ring transport will too.
/// </summary>
/// <remarks>
/// <para><b>Send order.</b> What a send carries (the descriptor or only the id) and its sequence number are decided in
/// <see cref="BeginBuffer"/>, which may only be called inside <see cref="EnterSend"/>'s scope: the one lock that also
/// orders the transmission. So two threads sending one new buffer cannot overtake each other: the one that carries
/// the descriptor transmits first, and the peer never sees an id before its descriptor. Forget is ordered the same way
/// (a descriptor sent after a forget never arrives before it). Every message a transport sends goes through the scope,
/// so nothing follows our goodbye.</para>
/// <para><b>Locks.</b> Two <c>Monitor</c> locks (plain objects, so a systematic scheduler such as Coyote controls them):
/// the send order, held across a transmission (bounded by the caller's deadline: <see cref="EnterSend"/> waits at most
/// until it), and the state lock, held only for table updates, never across a call out. Order: send order, then
/// state. Invariants are asserted inside the state lock in debug builds.</para>
/// <para><b>Peer's input.</b> Every check on what the peer sends (unknown ids, duplicates, the budgets, messages after
/// its goodbye) throws <see cref="ChannelProtocolException"/>; the transport closes the connection.</para>
/// </remarks>
/// <typeparam name="T">A reference to a buffer (a <c>DmaBufHandle</c>; a counting stand-in in tests).</typeparam>
internal sealed class ChannelLedger<T>
    where T : class, IDisposable
{
    private readonly object _sendOrder = new();
    private readonly object _lock = new();
    private readonly Dictionary<long, T> _shared = [];
    private readonly Dictionary<(long Id, long Sequence), bool> _outstanding = []; // value: delivered (false: being sent)
    private readonly Dictionary<long, int> _outstandingPerBuffer = [];
    private readonly Dictionary<long, Registration> _registered = [];
    private int _sendOrderOwner; // managed thread id of the send order's holder, 0 when free
    private long _nextSequence;
    private long _registeredBytes;
    private long _transientBytes;
    private readonly HashSet<(long Id, long Sequence)> _inFlightAtClose = []; // sends in flight when close ran (see CompleteBuffer)
    private int _transientCount; // transient deliveries held: each holds a descriptor, so the count is bounded as registrations are
    private bool _goodbyeSent;
    private bool _goodbyeReceived;
    private bool _closed;
    private ChannelErrorReason _closeReason;

    internal ChannelLedger(int maxRegisteredBuffers, long maxResidentBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxRegisteredBuffers);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxResidentBytes);
        MaxRegisteredBuffers = maxRegisteredBuffers;
        MaxResidentBytes = maxResidentBytes;
    }

    internal int MaxRegisteredBuffers { get; }

    internal long MaxResidentBytes { get; }

    /// <summary>Whether the connection is closed (a snapshot: written under the state lock, read without it).</summary>
    internal bool IsClosed => Volatile.Read(ref _closed);

    internal ChannelErrorReason CloseReason
    {
        get
        {
            lock (_lock)
            {
                return _closeReason;
            }
        }
    }

    /// <summary>Whether the peer said goodbye (a snapshot, as <see cref="IsClosed"/>).</summary>
    internal bool GoodbyeReceived => Volatile.Read(ref _goodbyeReceived);

    internal int SharedCount
    {
        get
        {
            lock (_lock)
            {
                return _shared.Count;
            }
        }
    }

    internal int OutstandingCount
    {
        get
        {
            lock (_lock)
            {
                return _outstanding.Count;
            }
        }
    }

    internal int RegisteredCount
    {
        get
        {
            lock (_lock)
            {
                return _registered.Count;
            }
        }
    }

    /// <summary>Bytes the peer makes us hold mapped: its registered buffers plus live transient deliveries.</summary>
    internal long ResidentBytes
    {
        get
        {
            lock (_lock)
            {
                return _registeredBytes + _transientBytes;
            }
        }
    }

    /// <summary>Ids of our buffers the peer holds a descriptor for.</summary>
    internal long[] SharedIds()
    {
        lock (_lock)
        {
            return [.. _shared.Keys];
        }
    }

    internal bool IsShared(long id)
    {
        lock (_lock)
        {
            return _shared.ContainsKey(id);
        }
    }

    internal bool IsOutstanding(long id, long sequence)
    {
        lock (_lock)
        {
            return _outstanding.ContainsKey((id, sequence));
        }
    }

    /// <summary>Whether the peer's buffer <paramref name="id"/> is registered with us.</summary>
    internal bool IsRegistered(long id)
    {
        lock (_lock)
        {
            return _registered.ContainsKey(id);
        }
    }

    // ---- sending ----

    /// <summary>
    /// Enters the send order, waiting until <paramref name="deadline"/> at most. Every transmission happens inside the
    /// returned scope.
    /// </summary>
    /// <exception cref="TimeoutException">Another send held the order past the deadline.</exception>
    internal SendScope EnterSend(Deadline deadline)
    {
        if (Monitor.TryEnter(_sendOrder))
        {
            // Nobody else sends (the usual case): the plain attempt, which costs less than the timed wait's first look.
        }
        else if (deadline.IsNever)
        {
            Monitor.Enter(_sendOrder);
        }
        else
        {
            while (!Monitor.TryEnter(_sendOrder, deadline.RemainingMilliseconds))
            {
                if (deadline.HasPassed)
                {
                    throw new TimeoutException("Another send held the connection past this send's deadline.");
                }
            }
        }

        _sendOrderOwner = Environment.CurrentManagedThreadId;
        return new SendScope(this);
    }

    /// <summary>Enters the send order only if nobody holds it (for a goodbye that must never wait).</summary>
    internal bool TryEnterSendNow(out SendScope scope)
    {
        scope = default;
        if (!Monitor.TryEnter(_sendOrder))
        {
            return false;
        }

        _sendOrderOwner = Environment.CurrentManagedThreadId;
        scope = new SendScope(this);
        return true;
    }

    /// <summary>
    /// Decides what a send of buffer <paramref name="id"/> carries and numbers it: the descriptor when the buffer is not
    /// shared yet (registering it, with a reference made by <paramref name="duplicate"/>) or when
    /// <paramref name="transient"/>; the id otherwise. The delivery is outstanding from now on (not yet delivered).
    /// </summary>
    /// <exception cref="ChannelProtocolException">The connection is closed, or we said goodbye.</exception>
    internal SendTicket BeginBuffer(long id, T buffer, bool transient, Func<T, T> duplicate)
    {
        RequireSendOrder();
        lock (_lock)
        {
            ThrowIfCannotSendLocked();
            bool withFd = transient || !_shared.ContainsKey(id);
            T? registration = null;
            if (withFd && !transient)
            {
                registration = duplicate(buffer);
                _shared.Add(id, registration);
            }

            long sequence = ++_nextSequence;
            _outstanding.Add((id, sequence), false);
            CollectionsMarshal.GetValueRefOrAddDefault(_outstandingPerBuffer, id, out _)++;
            AssertInvariantsLocked();
            return new SendTicket(id, sequence, withFd, registration);
        }
    }

    /// <summary>
    /// The send of <paramref name="ticket"/> went out: the delivery is with the peer. True when the connection closed
    /// between the transmission and this call and the delivery's hold on its pool buffer is the caller's to drop: close
    /// hands back only deliveries already recorded (one still in flight may yet fail, and then its caller keeps the
    /// buffer), so the sender ends this one itself.
    /// </summary>
    internal bool CompleteBuffer(in SendTicket ticket)
    {
        lock (_lock)
        {
            ref bool delivered = ref CollectionsMarshal.GetValueRefOrNullRef(_outstanding, (ticket.Id, ticket.Sequence));
            if (!System.Runtime.CompilerServices.Unsafe.IsNullRef(ref delivered))
            {
                delivered = true;
                AssertInvariantsLocked();
                return false;
            }

            return _inFlightAtClose.Remove((ticket.Id, ticket.Sequence)); // close came first and dropped it
        }
    }

    /// <summary>
    /// The send of <paramref name="ticket"/> did not go out: undoes it (the caller keeps its buffer) and returns the
    /// registration it made, if close has not dropped it already, for the caller to dispose.
    /// </summary>
    internal T? AbortBuffer(in SendTicket ticket) => AbortBuffer(ticket, out _);

    /// <summary>
    /// As <see cref="AbortBuffer(in SendTicket)"/>; <paramref name="stillOut"/> says whether the delivery was still out
    /// here (not released by the peer, which may release what it never got, nor handed back by close), so what holds
    /// the buffer for it lets go.
    /// </summary>
    internal T? AbortBuffer(in SendTicket ticket, out bool stillOut)
    {
        lock (_lock)
        {
            stillOut = _outstanding.Remove((ticket.Id, ticket.Sequence));
            if (stillOut)
            {
                DecrementOutstandingLocked(ticket.Id);
            }
            else
            {
                stillOut = _inFlightAtClose.Remove((ticket.Id, ticket.Sequence)); // failed after close, which left this one to its sender
            }

            T? drop = null;
            if (ticket.Registration is not null && _shared.TryGetValue(ticket.Id, out T? r) && ReferenceEquals(r, ticket.Registration))
            {
                _shared.Remove(ticket.Id);
                drop = r;
            }

            AssertInvariantsLocked();
            return drop;
        }
    }

    /// <summary>
    /// Ends the registration of our buffer <paramref name="id"/> with the peer and returns its reference (the caller
    /// sends the Forget, then disposes it), or null when the peer has none.
    /// </summary>
    /// <exception cref="ChannelProtocolException">The connection is closed, or we said goodbye.</exception>
    internal T? BeginForget(long id)
    {
        RequireSendOrder();
        lock (_lock)
        {
            ThrowIfCannotSendLocked();
            _shared.Remove(id, out T? registration);
            AssertInvariantsLocked();
            return registration;
        }
    }

    /// <summary>Checks that a message other than Buffer and Forget (Ack, Release, Ping, Pong) may be sent.</summary>
    /// <exception cref="ChannelProtocolException">The connection is closed, or we said goodbye.</exception>
    internal void BeginControl()
    {
        RequireSendOrder();
        if (Volatile.Read(ref _closed) || _goodbyeSent) // the goodbye changes only inside the send order, which we hold
        {
            lock (_lock)
            {
                ThrowIfCannotSendLocked();
            }
        }
    }

    /// <summary>Marks our goodbye as sent (nothing is sent after it); false when it is too late to say it.</summary>
    internal bool BeginGoodbye()
    {
        RequireSendOrder();
        lock (_lock)
        {
            if (_closed || _goodbyeSent)
            {
                return false;
            }

            _goodbyeSent = true;
            return true;
        }
    }

    // ---- receiving ----

    /// <summary>Every message from the peer is first checked here: nothing may follow its goodbye.</summary>
    /// <exception cref="ChannelProtocolException">The peer said goodbye before.</exception>
    internal void CheckReceivable()
    {
        if (Volatile.Read(ref _goodbyeReceived)) // set only by the receiving thread itself (OnGoodbye), so no lock is needed
        {
            throw new ChannelProtocolException(ChannelErrorReason.MessageAfterGoodbye, "The peer sent a message after its goodbye.");
        }
    }

    /// <summary>The peer said goodbye.</summary>
    internal void OnGoodbye()
    {
        lock (_lock)
        {
            _goodbyeReceived = true;
        }
    }

    /// <summary>Checks an acknowledgement: the delivery must be out with the peer.</summary>
    internal void OnAck(long id, long sequence)
    {
        lock (_lock)
        {
            if (!_outstanding.ContainsKey((id, sequence)))
            {
                throw new ChannelProtocolException(
                    ChannelErrorReason.UnknownBufferId, $"Acknowledgement of buffer {id} #{sequence}, which is not out with the peer.");
            }
        }
    }

    /// <summary>The peer released a delivery; returns whether it was the last one of that buffer out with the peer.</summary>
    internal bool OnRelease(long id, long sequence)
    {
        lock (_lock)
        {
            if (!_outstanding.Remove((id, sequence)))
            {
                throw new ChannelProtocolException(
                    ChannelErrorReason.UnknownBufferId, $"Release of buffer {id} #{sequence}, which is not out with the peer.");
            }

            bool last = DecrementOutstandingLocked(id);
            AssertInvariantsLocked();
            return last;
        }
    }

    /// <summary>The peer forgot its buffer <paramref name="id"/>: returns the registration's reference to dispose.</summary>
    internal T OnPeerForget(long id)
    {
        T reference = OnPeerForget(id, out FrameMapping? mapping);
        mapping?.Retire();
        return reference;
    }

    /// <summary>
    /// As <see cref="OnPeerForget(long)"/>, also handing back the registration's mapping, if it had one, for the caller
    /// to retire outside the lock.
    /// </summary>
    internal T OnPeerForget(long id, out FrameMapping? mapping)
    {
        lock (_lock)
        {
            if (!_registered.Remove(id, out Registration registration))
            {
                throw new ChannelProtocolException(ChannelErrorReason.UnknownBufferId, $"Forget of buffer {id}, which is not registered.");
            }

            _registeredBytes -= registration.Size;
            mapping = registration.Mapping;
            AssertInvariantsLocked();
            return registration.Reference;
        }
    }

    /// <summary>A send of the peer's registered buffer <paramref name="id"/> without descriptor: a new reference to it.</summary>
    internal T DeliverRegistered(long id, long size, Func<T, T> duplicate)
    {
        lock (_lock)
        {
            return duplicate(FindRegisteredLocked(id, size).Reference);
        }
    }

    /// <summary>
    /// A send of the peer's registered buffer <paramref name="id"/> without descriptor, through the registration's one
    /// mapping: a pooled lease on it, or null when the registration has no mapping. Checked as
    /// <see cref="DeliverRegistered"/> is. Allocates nothing once the lease pool is warm.
    /// </summary>
    internal FrameLease? LeaseRegistered(long id, long size)
    {
        lock (_lock)
        {
            Registration registration = FindRegisteredLocked(id, size);
            return registration.Mapping?.Lease(); // the registration holds its count while we hold the lock
        }
    }

    /// <summary>
    /// Checks, before anything is imported or mapped, that the peer may make us hold buffer <paramref name="id"/> of
    /// <paramref name="size"/> bytes: registered (not <paramref name="transient"/>) or for one delivery.
    /// </summary>
    internal void CheckIncoming(long id, long size, bool transient)
    {
        lock (_lock)
        {
            CheckIncomingLocked(id, size, transient);
        }
    }

    /// <summary>
    /// Registers the peer's buffer <paramref name="id"/>, taking <paramref name="reference"/> and, if given, the
    /// registration's one <paramref name="mapping"/> (retired when the registration ends); false (the caller keeps and
    /// disposes both) when the connection closed meanwhile.
    /// </summary>
    internal bool Register(long id, long size, T reference, FrameMapping? mapping = null)
    {
        lock (_lock)
        {
            if (_closed)
            {
                return false;
            }

            CheckIncomingLocked(id, size, transient: false);
            _registered.Add(id, new Registration(reference, size, mapping));
            _registeredBytes += size;
            AssertInvariantsLocked();
            return true;
        }
    }

    /// <summary>A transient delivery of <paramref name="size"/> bytes is held now; false when closed.</summary>
    internal bool HoldTransient(long size)
    {
        lock (_lock)
        {
            if (_closed)
            {
                return false;
            }

            CheckIncomingLocked(0, size, transient: true);
            _transientBytes += size;
            _transientCount++;
            AssertInvariantsLocked();
            return true;
        }
    }

    /// <summary>A transient delivery held by <see cref="HoldTransient"/> was disposed.</summary>
    internal void ReleaseTransient(long size)
    {
        lock (_lock)
        {
            if (!_closed)
            {
                _transientBytes -= size;
                _transientCount--;
            }

            AssertInvariantsLocked();
        }
    }

    // ---- closing ----

    /// <summary>
    /// Closes the ledger once: returns every reference it held (to dispose) and, for each of our deliveries the peer
    /// had not released, its buffer's id (each delivery's hold on its pool buffer to drop), or null when it was closed
    /// already.
    /// </summary>
    internal CloseResult? Close(ChannelErrorReason reason)
    {
        lock (_lock)
        {
            if (_closed)
            {
                return null;
            }

            _closed = true;
            _closeReason = reason;
            var drop = new List<T>(_shared.Count + _registered.Count);
            var mappings = new List<FrameMapping>();
            drop.AddRange(_shared.Values);
            foreach (Registration r in _registered.Values)
            {
                drop.Add(r.Reference);
                if (r.Mapping is not null)
                {
                    mappings.Add(r.Mapping);
                }
            }

            var undelivered = new List<(long Id, long Sequence)>(); // every delivery out with the peer
            foreach (((long id, long sequence), bool delivered) in _outstanding)
            {
                if (delivered)
                {
                    undelivered.Add((id, sequence));
                }
                else
                {
                    _inFlightAtClose.Add((id, sequence)); // its sender learns in CompleteBuffer that the delivery is its to end
                }
            }

            _shared.Clear();
            _registered.Clear();
            _outstanding.Clear();
            _outstandingPerBuffer.Clear();
            _registeredBytes = 0;
            _transientBytes = 0;
            _transientCount = 0;
            AssertInvariantsLocked();
            // One id per delivery (each holds its pool buffer), in the order they went out, so a pool that gets several
            // buffers back at once hands them out again in that order.
            return new CloseResult(drop, [.. undelivered.OrderBy(u => u.Sequence).Select(u => u.Id)], mappings);
        }
    }

    /// <summary>The exception for a send on a ledger that is closed or has said goodbye.</summary>
    internal ChannelProtocolException ClosedException()
    {
        lock (_lock)
        {
            return ClosedExceptionLocked();
        }
    }

    private ChannelProtocolException ClosedExceptionLocked() => new(
        _closeReason == ChannelErrorReason.None ? ChannelErrorReason.PeerClosed : _closeReason,
        _closed ? "The connection is closed." : "The connection is closing: goodbye was said.");

    private void ThrowIfCannotSendLocked()
    {
        if (_closed || _goodbyeSent)
        {
            throw ClosedExceptionLocked();
        }
    }

    private void CheckIncomingLocked(long id, long size, bool transient)
    {
        if (!transient && _registered.ContainsKey(id))
        {
            throw new ChannelProtocolException(
                ChannelErrorReason.DuplicateBufferId, $"Buffer {id} is registered already; its descriptor came again.");
        }

        if (!transient && _registered.Count >= MaxRegisteredBuffers)
        {
            throw new ChannelProtocolException(
                ChannelErrorReason.TooManyBuffers, $"The peer has {_registered.Count} buffers registered; at most {MaxRegisteredBuffers} are allowed.");
        }

        if (transient && _transientCount >= MaxRegisteredBuffers)
        {
            // However small each is: every one holds a descriptor, and descriptors are the process's, not this connection's.
            throw new ChannelProtocolException(
                ChannelErrorReason.TooManyBuffers, $"We hold {_transientCount} transient deliveries of the peer's not yet disposed; at most {MaxRegisteredBuffers} are allowed at once.");
        }

        long resident = _registeredBytes + _transientBytes;
        if (size > MaxResidentBytes - resident)
        {
            throw new ChannelProtocolException(
                ChannelErrorReason.ResidentBudget,
                $"Buffer {id} of {size} bytes would make the peer's buffers here {resident + size} bytes; the connection's budget is {MaxResidentBytes}.");
        }
    }

    private Registration FindRegisteredLocked(long id, long size)
    {
        if (!_registered.TryGetValue(id, out Registration registration))
        {
            throw new ChannelProtocolException(
                ChannelErrorReason.UnknownBufferId, $"Buffer {id} was never sent with its descriptor on this connection (or was forgotten).");
        }

        if (registration.Size != size)
        {
            throw new ChannelProtocolException(
                ChannelErrorReason.BadBufferSize, $"Buffer {id} was registered with {registration.Size} bytes; now the peer claims {size}.");
        }

        return registration;
    }

    private bool DecrementOutstandingLocked(long id)
    {
        ref int left = ref CollectionsMarshal.GetValueRefOrNullRef(_outstandingPerBuffer, id);
        Debug.Assert(!System.Runtime.CompilerServices.Unsafe.IsNullRef(ref left), "an outstanding delivery without its buffer's count");
        if (--left == 0)
        {
            _outstandingPerBuffer.Remove(id);
            return true;
        }

        return false;
    }

    private void RequireSendOrder()
    {
        // Tracked by hand rather than asked of Monitor.IsEntered, which a systematic scheduler does not control.
        if (Volatile.Read(ref _sendOrderOwner) != Environment.CurrentManagedThreadId)
        {
            throw new InvalidOperationException("A send must be begun inside the ledger's send order (EnterSend).");
        }
    }

    [Conditional("DEBUG")]
    private void AssertInvariantsLocked()
    {
        int outstanding = 0;
        foreach ((long id, int count) in _outstandingPerBuffer)
        {
            Debug.Assert(count > 0, "a buffer with no outstanding delivery is counted");
            outstanding += count;
        }

        Debug.Assert(outstanding == _outstanding.Count, "per-buffer outstanding counts disagree with the deliveries");
        foreach ((long id, long sequence) in _outstanding.Keys)
        {
            Debug.Assert(sequence >= 1 && sequence <= _nextSequence, "a delivery numbered outside the sequence");
            Debug.Assert(_outstandingPerBuffer.ContainsKey(id), "a delivery of an uncounted buffer");
        }

        long bytes = 0;
        foreach (Registration r in _registered.Values)
        {
            Debug.Assert(r.Size > 0, "a registration without size");
            bytes += r.Size;
        }

        Debug.Assert(bytes == _registeredBytes, "registered byte count is off");
        Debug.Assert(_transientBytes >= 0, "transient byte count went negative");
        Debug.Assert(_transientCount >= 0 && _transientCount <= MaxRegisteredBuffers, "transient count out of bounds");
        Debug.Assert(_registered.Count <= MaxRegisteredBuffers, "more registrations than allowed");
        Debug.Assert(_registeredBytes + _transientBytes <= MaxResidentBytes, "resident budget exceeded");
        Debug.Assert(!_closed || (_shared.Count == 0 && _registered.Count == 0 && _outstanding.Count == 0 && _transientBytes == 0),
            "a closed ledger still holds something");
    }

    /// <summary>What one begun buffer send carries, as <see cref="BeginBuffer"/> decided.</summary>
    /// <param name="Id">The buffer.</param>
    /// <param name="Sequence">The delivery's number.</param>
    /// <param name="WithFd">The send carries the buffer's descriptor.</param>
    /// <param name="Registration">The reference the registration made by this send holds, if it made one.</param>
    internal readonly record struct SendTicket(long Id, long Sequence, bool WithFd, T? Registration);

    /// <summary>What <see cref="Close"/> hands back: references to dispose, ids to return, mappings to retire.</summary>
    internal sealed record CloseResult(List<T> Drop, long[] Undelivered, List<FrameMapping> Mappings);

    private readonly record struct Registration(T Reference, long Size, FrameMapping? Mapping);

    /// <summary>The send order held; disposing it lets the next send go.</summary>
    internal readonly struct SendScope(ChannelLedger<T> ledger) : IDisposable
    {
        public void Dispose()
        {
            if (ledger is not null)
            {
                Volatile.Write(ref ledger._sendOrderOwner, 0);
                Monitor.Exit(ledger._sendOrder);
            }
        }
    }
}

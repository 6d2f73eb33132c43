// Ownership: on the ring transport the channel also owns a ChannelRing (two mappings, two wake-up sockets) and the socket
// records that arrived ahead of their ring entry (each with its descriptor) until the entry takes one or close drops
// them. Close disposes both.
using System.Diagnostics;

namespace DmaBuf.Linux;

/// <summary>The ring transport of <see cref="BufferChannel"/>: the control ring beside the socket.</summary>
/// <remarks>
/// <para><b>One order.</b> Every message except ping and pong goes through our outbound ring, in the ledger's send
/// order, so the ring's order is the send order. A message that carries a descriptor goes as a socket record first
/// (the descriptor and the whole message), then as a ring entry that says so; the receiver takes the record when it
/// reaches the entry (the record was queued before the entry was published) and refuses any difference between the
/// two. So the peer never sees an id before its descriptor, nor a forget overtaking a send.</para>
/// <para><b>The socket</b> keeps what only it can do: descriptors, credentials, liveness (a peer that dies is a hang-up,
/// even mid-entry), and pings (the bare round trip of the socket).</para>
/// </remarks>
public sealed partial class BufferChannel
{
    /// <summary>Socket records that may wait for their ring entry at once; more is a protocol error.</summary>
    private const int MaxAheadRecords = 16;

    /// <summary>The longest a blocking receive sleeps on its futex before it looks at the socket (a peer's death shows there).</summary>
    private const int FutexSliceMs = 50;

    /// <summary>Wakes in one wait that may bring nothing before each further sleep waits a millisecond first.</summary>
    private const int MaxFruitlessWakes = 8;

    private readonly Queue<(ReceivedRecord Record, WireMessage Message)> _ahead = new(); // under its own lock
    private readonly RingWait _wait;
    private readonly long _spinBudgetTicks;
    private bool _wakePending; // a signal on our wake-up socket that a room wait could not drain (a receiver held the gate)
    private readonly bool _wantsRing;
    private ChannelRing? _ring;
    private (SafeFdHandle Region, SafeFdHandle Wait)? _ourSetup; // sent, the peer's not yet received
    private long _lastRingSequence; // receive side: the last buffer sequence taken from the ring
    private bool _pongSeen;         // receive side: a pong came while the ring was being read
    private bool _socketEnded;      // receive side: the socket reached its end; the ring is drained before we end
    private string _socketEndHow = "";

    /// <summary>The control ring on the ring transport (for tests), else null.</summary>
    internal ChannelRing? Ring => _ring;

    /// <summary>The transport this channel uses.</summary>
    public ChannelTransport Transport => _ring is null ? ChannelTransport.Socket : ChannelTransport.Ring;

    /// <summary>
    /// On the ring transport, how many times we signalled the peer because it slept waiting for our entries, or for room
    /// in its full ring that our consuming made (0 on the socket transport).
    /// </summary>
    public long WakeUpsSent => (_ring?.WakesSent ?? 0) + (_ring?.RoomWakesSent ?? 0);

    private enum Input
    {
        Ring,
        Socket,
        TimedOut,
    }

    /// <summary>Sends our region and wake-up socket, receives the peer's, and opens the ring. Any failure throws (the caller closes the socket).</summary>
    private void SetUpRing()
    {
        SendRingSetup();
        ReceiveRingSetup(Deadline.After(_sendTimeout));
    }

    /// <summary>Whether this channel sent its half of the ring's setup and waits for the peer's (a listener's handshake).</summary>
    internal bool AwaitsRingSetup => _ourSetup is not null;

    /// <summary>
    /// The second half of an accepted connection's setup (<see cref="StartAccepted"/>): the peer's region and wake-up
    /// socket, looked for until <paramref name="deadline"/>. Any failure closes the channel and throws.
    /// </summary>
    internal void FinishRingSetup(Deadline deadline)
    {
        try
        {
            ReceiveRingSetup(deadline);
        }
        catch
        {
            Close(ChannelErrorReason.LocalFailure);
            throw;
        }
    }

    /// <summary>Creates our region and wake-up socket pair and sends the region and the pair's signal end (the first half of the ring's setup).</summary>
    private void SendRingSetup()
    {
        (SafeFdHandle region, SafeFdHandle wait, SafeFdHandle signal) = ChannelRing.CreateOurs();
        _ourSetup = (region, wait);
        Span<byte> data = stackalloc byte[WireFormat.MaxMessageSize];
        int length = WireFormat.Encode(SetupMessage(), data);
        SendStatus sent;
        using (signal) // the peer's from now on: we keep only the end we wait on
        {
            sent = _socket.Send(data[..length], region, signal, Deadline.After(_sendTimeout));
        }

        if (sent != SendStatus.Sent)
        {
            throw new ChannelProtocolException(
                sent == SendStatus.TimedOut ? ChannelErrorReason.SendTimeout : ChannelErrorReason.PeerClosed,
                $"The ring's setup could not be sent to pid {Peer.ProcessId}.");
        }
    }

    /// <summary>Receives the peer's region and wake-up socket until <paramref name="deadline"/>, checks them, and opens the ring (the second half).</summary>
    private void ReceiveRingSetup(Deadline deadline)
    {
        (SafeFdHandle region, SafeFdHandle wait) = _ourSetup!.Value;
        _ourSetup = null;
        ReceivedRecord? record = null;
        try
        {
            Span<byte> data = stackalloc byte[ChannelSocket.MaxRecord];
            ReceiveStatus status = _socket.Receive(data, deadline, out record, out string how);
            switch (status)
            {
                case ReceiveStatus.TimedOut:
                    throw new ChannelProtocolException(
                        ChannelErrorReason.RingCorrupt, $"Pid {Peer.ProcessId} set up no ring within {_sendTimeout}; both sides must use the ring transport.");
                case ReceiveStatus.EndOfStream:
                    throw new ChannelProtocolException(ChannelErrorReason.PeerClosed, $"Pid {Peer.ProcessId} went away before setting up the ring ({how}).");
            }

            if (record!.ControlTruncated || record.DataTruncated || record.Length == 0)
            {
                throw new ChannelProtocolException(ChannelErrorReason.RingCorrupt, "The peer's ring setup was truncated or empty.");
            }

            WireMessage m = WireFormat.Decode(data[..record.Length], record.DescriptorCount);
            if (m != SetupMessage())
            {
                throw new ChannelProtocolException(
                    ChannelErrorReason.RingCorrupt,
                    $"Pid {Peer.ProcessId} sent a {m.Type} message where the ring's setup was due ({ChannelRing.RegionSize} bytes, " +
                    $"{ChannelRing.Capacity} entries of {ChannelRing.EntrySize}, version {ChannelRing.RegionVersion}); both sides must use the ring transport of this version.");
            }

            SafeFdHandle peerRegion = record.TakeDescriptor();
            SafeFdHandle peerWake = record.TakeDescriptor();
            _ring = ChannelRing.Open(region, wait, peerRegion, peerWake); // takes all four, closing them on failure
        }
        catch
        {
            region.Dispose();
            wait.Dispose();
            throw;
        }
        finally
        {
            record?.Dispose();
        }
    }

    /// <summary>Drops a setup that was sent but never completed.</summary>
    private void AbandonRingSetup()
    {
        if (_ourSetup is (SafeFdHandle region, SafeFdHandle wait))
        {
            region.Dispose();
            wait.Dispose();
            _ourSetup = null;
        }
    }

    /// <summary>The ring's setup record: region size, capacity, format version and entry size, which both sides must share.</summary>
    internal static WireMessage SetupMessage() => new(
        MessageType.RingSetup, MessageFlags.FdAttached, Size: ChannelRing.RegionSize,
        UserData: ((ulong)ChannelRing.Capacity << 32) | ((ulong)ChannelRing.RegionVersion << 16) | ChannelRing.EntrySize);

    /// <summary>Transmits one message through the ring (its descriptor, if any, on the socket first), inside the send order.</summary>
    private void TransmitRing(in WireMessage message, SafeFdHandle? fd, Deadline deadline)
    {
        ChannelRing ring = _ring!;
        if (!ring.Enter())
        {
            throw _ledger.ClosedException();
        }

        try
        {
            WaitForRoom(ring, message.Type, deadline);
            if (fd is not null)
            {
                TransmitSocket(message, fd, deadline); // counts the message and the descriptor
            }
            else
            {
                // Inside the send order, the counter's only writer: a plain store, not a locked one, which would wait
                // here for every earlier store of this send before the entry can be published.
                Volatile.Write(ref _messagesSent, _messagesSent + 1);
            }

            ring.Publish(new RingEntry
            {
                Type = (uint)message.Type,
                Flags = (uint)message.Flags,
                BufferId = message.BufferId,
                Sequence = message.Sequence,
                Size = message.Size,
                UserData = message.UserData,
            });
        }
        finally
        {
            ring.Exit();
        }
    }

    /// <summary>
    /// Waits until our ring has room for one entry (a peer that stops consuming fills it), until the deadline: spinning
    /// (<see cref="RingWait.Spin"/>, or <see cref="RingWait.Hybrid"/> within its spin budget), else asleep on our
    /// wake-up socket, which the peer signals when it consumes while we say we wait.
    /// </summary>
    private void WaitForRoom(ChannelRing ring, MessageType type, Deadline deadline)
    {
        if (HasRoomClosing(ring))
        {
            return; // the usual case: no clock read, no spin state
        }

        var spin = default(SpinWait);
        long spinUntil = _wait switch
        {
            RingWait.Spin => long.MaxValue,
            RingWait.Hybrid => Stopwatch.GetTimestamp() + _spinBudgetTicks,
            _ => 0,
        };
        while (true)
        {
            if (ring.IsDisposed)
            {
                throw _ledger.ClosedException();
            }

            if (deadline.HasPassed)
            {
                throw Fail(ChannelErrorReason.SendTimeout, $"Peer pid {Peer.ProcessId} consumed nothing of our ring for {_sendTimeout}; the {type} message was not sent.");
            }

            if (spinUntil == long.MaxValue || Stopwatch.GetTimestamp() < spinUntil)
            {
                spin.SpinOnce(sleep1Threshold: -1); // spins, then yields; never sleeps
                if (HasRoomClosing(ring))
                {
                    return;
                }

                continue;
            }

            ring.BeginRoomWait();
            try
            {
                if (HasRoomClosing(ring))
                {
                    return;
                }

                int slice = deadline.IsNever ? ChannelRing.RoomWaitSliceMs : Math.Min(ChannelRing.RoomWaitSliceMs, deadline.RemainingMilliseconds);
                if (Interop.Libc.PollReadable(ring.Wake, slice))
                {
                    if (_receiveGate.TryEnter())
                    {
                        // Nobody receives: the signal is ours to reset. (A receiver sleeping on the same socket drains it
                        // itself; resetting it under a receiver could make it sleep through its own wake-up.)
                        try
                        {
                            ring.DrainWake();
                        }
                        finally
                        {
                            _receiveGate.Exit();
                        }
                    }
                    else
                    {
                        Volatile.Write(ref _wakePending, true); // a receiver asleep on its futex drains it when it wakes
                    }
                }
            }
            catch (ObjectDisposedException)
            {
                throw _ledger.ClosedException(); // closed meanwhile
            }
            finally
            {
                ring.EndRoomWait();
            }
        }
    }

    /// <summary>Whether our ring has room; a corrupt tail closes the connection.</summary>
    private bool HasRoomClosing(ChannelRing ring)
    {
        try
        {
            return ring.HasRoom();
        }
        catch (ChannelProtocolException e)
        {
            Close(e.Reason);
            throw;
        }
    }

    /// <summary>Publishes our goodbye if there is room at once (Dispose never waits).</summary>
    private void PublishGoodbyeNow()
    {
        ChannelRing ring = _ring!;
        if (!ring.Enter())
        {
            return;
        }

        try
        {
            if (ring.HasRoom())
            {
                ring.Publish(new RingEntry { Type = (uint)MessageType.Goodbye });
                Interlocked.Increment(ref _messagesSent);
            }
        }
        catch (ChannelProtocolException)
        {
            // The peer corrupted the ring; closing is all that is left.
        }
        finally
        {
            ring.Exit();
        }
    }

    /// <summary>The ring transport's <see cref="ReceiveOne"/>: the next ring entry, waiting as <see cref="BufferChannelOptions.Wait"/> says.</summary>
    private ChannelMessage? ReceiveOneRing(Deadline deadline)
    {
        ChannelRing ring = _ring!;
        if (!ring.Enter())
        {
            return null;
        }

        try
        {
            while (true)
            {
                if (IsClosed)
                {
                    return null;
                }

                if (_pongSeen)
                {
                    _pongSeen = false;
                    return s_pong;
                }

                RingEntry entry;
                bool got;
                try
                {
                    got = ring.TryRead(out entry);
                }
                catch (ChannelProtocolException e)
                {
                    Close(e.Reason);
                    throw;
                }

                if (got)
                {
                    Volatile.Write(ref _messagesReceived, _messagesReceived + 1); // inside the receive gate: its only writer
                    ChannelMessage? message = HandleEntryClosing(entry, deadline);
                    if (message is not null)
                    {
                        return message;
                    }

                    continue;
                }

                if (_socketEnded)
                {
                    if (_ledger.GoodbyeReceived)
                    {
                        Close(ChannelErrorReason.None);
                        return null;
                    }

                    throw Fail(ChannelErrorReason.PeerClosed, PeerGoneMessage(_socketEndHow));
                }

                switch (WaitForInput(ring, deadline))
                {
                    case Input.Socket:
                        PumpSocket(Deadline.Now);
                        break;
                    case Input.TimedOut:
                        return s_timedOut;
                }
            }
        }
        finally
        {
            ring.Exit();
        }
    }

    /// <summary>Waits for a ring entry or a socket record: spinning, sleeping, or spinning then sleeping.</summary>
    private Input WaitForInput(ChannelRing ring, Deadline deadline)
    {
        if (deadline.HasPassed)
        {
            return SocketReadableNow() ? Input.Socket : Input.TimedOut; // a look, no wait (ReceiveAsync's first try)
        }

        if (_wait != RingWait.Block)
        {
            long start = Stopwatch.GetTimestamp();
            long lastPoll = start;
            long pollEvery = Stopwatch.Frequency / 5000; // the socket (pings, a hang-up) every 200 µs
            for (int i = 1; ; i++)
            {
                if (ring.HasInput())
                {
                    return Input.Ring;
                }

                if ((i & 255) == 0)
                {
                    if (ring.IsDisposed)
                    {
                        return Input.Ring; // the caller sees the close
                    }

                    long now = Stopwatch.GetTimestamp();
                    if (_wait == RingWait.Hybrid && now - start >= _spinBudgetTicks)
                    {
                        break;
                    }

                    if (now - lastPoll >= pollEvery)
                    {
                        lastPoll = now;
                        if (SocketReadableNow())
                        {
                            return Input.Socket;
                        }

                        if (deadline.HasPassed)
                        {
                            return Input.TimedOut;
                        }

                        // Every 200 µs of spinning, the CPU to anyone waiting for it: the peer itself, when the scheduler
                        // put both processes on one CPU (a socket wake-up asks it to), would otherwise not run until our
                        // time slice ends, milliseconds later. Not more often: whatever else is runnable here (a
                        // runtime thread, a kernel worker) takes the CPU for its own slice, and the handoff waits.
                        Thread.Yield();
                    }
                }

                Thread.SpinWait(1);
            }
        }

        int fruitless = 0; // wakes in this wait that brought nothing: a peer waking us (or rewriting our flag) for nothing
        while (true)
        {
            if (Interop.Libc.HasFutex)
            {
                if (fruitless > MaxFruitlessWakes)
                {
                    Thread.Sleep(1); // such a peer gets one look a millisecond, not a spin of ours
                }

                // A sleep in slices: a futex does not see the socket (a peer that died, a record from a peer that did not
                // nudge us), so the socket is looked at before each sleep (after the flag: a peer that sends a record,
                // then reads the flag, either sees it and wakes us or sent before our look) and after each wake.
                int slice = deadline.IsNever ? FutexSliceMs : Math.Min(FutexSliceMs, deadline.RemainingMilliseconds);
                FutexOutcome outcome = FutexOutcome.Changed;
                ring.BeginFutexSleep();
                try
                {
                    if (!ring.HasInput() && !ring.IsDisposed && !SocketReadableNow())
                    {
                        outcome = ring.SleepOnFutex(slice);
                    }
                }
                finally
                {
                    ring.SetSleeping(false);
                }

                if (Volatile.Read(ref _wakePending))
                {
                    Volatile.Write(ref _wakePending, false);
                    ring.DrainWake(); // a room wait's signal nobody drained; the ring is read next, so nothing is lost
                }

                if (ring.HasInput() || ring.IsDisposed)
                {
                    return Input.Ring;
                }

                if (SocketReadableNow())
                {
                    return Input.Socket;
                }

                if (deadline.HasPassed)
                {
                    return Input.TimedOut;
                }

                if (outcome != FutexOutcome.TimedOut)
                {
                    fruitless++;
                }

                continue;
            }

            ring.SetSleeping(true);
            if (ring.HasInput())
            {
                ring.SetSleeping(false);
                return Input.Ring;
            }

            short socket, woken;
            try
            {
                (socket, woken) = _socket.PollWith(ring.Wake, deadline.RemainingMilliseconds);
            }
            catch (ObjectDisposedException)
            {
                return Input.Ring; // closed meanwhile: the caller sees it
            }
            finally
            {
                ring.SetSleeping(false);
            }

            if (woken != 0)
            {
                ring.DrainWake();
            }

            if (socket != 0)
            {
                return Input.Socket;
            }

            if (woken != 0 || ring.HasInput())
            {
                return Input.Ring;
            }

            if (deadline.HasPassed)
            {
                return Input.TimedOut;
            }
        }
    }

    private bool SocketReadableNow()
    {
        try
        {
            return _socket.ReadableNow();
        }
        catch (ObjectDisposedException)
        {
            return true; // closed meanwhile: the caller sees it
        }
    }

    /// <summary>
    /// Receives one socket record until <paramref name="deadline"/> and handles it: a ping is answered, a pong noted, a
    /// buffer with its descriptor kept for its ring entry; the end of the stream noted. False when nothing came.
    /// </summary>
    private bool PumpSocket(Deadline deadline)
    {
        Span<byte> data = stackalloc byte[ChannelSocket.MaxRecord];
        ReceivedRecord? record = null;
        try
        {
            ReceiveStatus status;
            string how;
            try
            {
                status = _socket.Receive(data, deadline, out record, out how);
            }
            catch (ObjectDisposedException) when (IsClosed)
            {
                return false;
            }
            catch (LinuxErrorException e)
            {
                throw Fail(ChannelErrorReason.LocalFailure, $"Receiving from pid {Peer.ProcessId} failed: {e.Message}", e);
            }

            switch (status)
            {
                case ReceiveStatus.TimedOut:
                    return false;
                case ReceiveStatus.EndOfStream:
                    _socketEnded = true;
                    _socketEndHow = how;
                    return true;
            }

            Interlocked.Add(ref _fdsReceived, record!.DescriptorCount);
            try
            {
                _ledger.CheckReceivable();
                if (record.ControlTruncated || record.DataTruncated || record.Length == 0)
                {
                    throw new ChannelProtocolException(
                        record.ControlTruncated ? ChannelErrorReason.SurplusFds : ChannelErrorReason.WrongSize,
                        $"A socket record of {record.Length} bytes arrived truncated or empty (flags 0x{record.Flags:x}).");
                }

                WireMessage m = WireFormat.Decode(data[..record.Length], record.DescriptorCount);
                switch (m.Type)
                {
                    case MessageType.Ping:
                        Interlocked.Increment(ref _messagesReceived);
                        SendControl(new WireMessage(MessageType.Pong), Deadline.After(_sendTimeout));
                        return true;
                    case MessageType.Pong:
                        Interlocked.Increment(ref _messagesReceived);
                        _pongSeen = true;
                        return true;
                    case MessageType.Buffer when m.Flags.HasFlag(MessageFlags.FdAttached):
                        lock (_ahead)
                        {
                            if (IsClosed)
                            {
                                return false; // close drained the queue; the record is disposed below
                            }

                            if (_ahead.Count >= MaxAheadRecords)
                            {
                                throw new ChannelProtocolException(
                                    ChannelErrorReason.RingCorrupt, $"More than {MaxAheadRecords} descriptors came on the socket ahead of their ring entries.");
                            }

                            _ahead.Enqueue((record, m));
                            record = null; // the queue owns it now
                        }

                        return true;
                    default:
                        throw new ChannelProtocolException(
                            ChannelErrorReason.RingCorrupt, $"A {m.Type} message came on the socket; on the ring transport it comes through the ring.");
                }
            }
            catch (ChannelProtocolException e)
            {
                if (ClosedCleanlyUnder(e))
                {
                    return true; // closed here meanwhile (a pong that found the connection closed): the caller sees the close
                }

                throw;
            }
        }
        finally
        {
            record?.Dispose();
        }
    }

    /// <summary><see cref="HandleEntry"/>, closing the connection on any failure.</summary>
    private ChannelMessage? HandleEntryClosing(in RingEntry entry, Deadline deadline)
    {
        try
        {
            return HandleEntry(entry, deadline);
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
            throw Fail(ChannelErrorReason.LocalFailure, $"Handling a ring entry from pid {Peer.ProcessId} failed: {e.Message}", e);
        }
    }

    /// <summary>Checks and acts on one ring entry (already copied out of the shared pages), within the receive's <paramref name="deadline"/>.</summary>
    private ChannelMessage? HandleEntry(in RingEntry e, Deadline deadline)
    {
        _ledger.CheckReceivable();
        var type = (MessageType)e.Type;
        var flags = (MessageFlags)e.Flags;
        MessageFlags allowed = type == MessageType.Buffer ? MessageFlags.FdAttached | MessageFlags.Transient : MessageFlags.None;
        bool known = e.Type <= ushort.MaxValue && type is MessageType.Buffer or MessageType.Ack or MessageType.Release or MessageType.Forget or MessageType.Goodbye;
        if (!known)
        {
            throw new ChannelProtocolException(ChannelErrorReason.RingCorrupt, $"A ring entry of type {e.Type}, which the ring does not carry.");
        }

        if ((flags & ~allowed) != 0 || (flags.HasFlag(MessageFlags.Transient) && !flags.HasFlag(MessageFlags.FdAttached)))
        {
            throw new ChannelProtocolException(ChannelErrorReason.RingCorrupt, $"Flags 0x{e.Flags:x} are not valid on a {type} ring entry.");
        }

        switch (type)
        {
            case MessageType.Buffer:
                if (e.Sequence <= _lastRingSequence)
                {
                    throw new ChannelProtocolException(
                        ChannelErrorReason.RingCorrupt, $"Buffer {e.BufferId} came with sequence {e.Sequence}, not after the last one, {_lastRingSequence}.");
                }

                _lastRingSequence = e.Sequence;
                var m = new WireMessage(type, flags, e.BufferId, e.Sequence, e.Size, e.UserData);
                if (!flags.HasFlag(MessageFlags.FdAttached))
                {
                    return OnBuffer(m, record: null);
                }

                ReceivedRecord record = TakeRecordFor(m, deadline);
                try
                {
                    return OnBuffer(m, record);
                }
                finally
                {
                    record.Dispose();
                }

            case MessageType.Ack:
                _ledger.OnAck(e.BufferId, e.Sequence);
                return new BufferAcknowledged(e.BufferId, e.Sequence, e.UserData);
            case MessageType.Release:
                _ledger.OnRelease(e.BufferId, e.Sequence);
                bool returned = _pool is not null && _pool.DropChannelHold(e.BufferId); // the delivery's hold
                return new BufferReleased(e.BufferId, e.Sequence, returned);
            case MessageType.Forget:
                _ledger.OnPeerForget(e.BufferId).Dispose();
                return null;
            default: // Goodbye
                _ledger.OnGoodbye();
                return null;
        }
    }

    /// <summary>
    /// The socket record that carries the descriptor of ring entry <paramref name="m"/>: queued before the entry was
    /// published, so an honest peer's is readable at once (behind, at most, other records already queued); it must say
    /// exactly what the entry says. Looked for until the receive's own deadline or the send timeout, whichever comes
    /// first: past it, the peer announced a descriptor it did not send.
    /// </summary>
    private ReceivedRecord TakeRecordFor(in WireMessage m, Deadline receiveDeadline)
    {
        Deadline deadline = Deadline.Earlier(receiveDeadline, Deadline.After(_sendTimeout));
        while (true)
        {
            lock (_ahead)
            {
                if (_ahead.TryDequeue(out (ReceivedRecord Record, WireMessage Message) ahead))
                {
                    if (ahead.Message != m)
                    {
                        ahead.Record.Dispose();
                        throw new ChannelProtocolException(
                            ChannelErrorReason.RingCorrupt, $"The ring says buffer {m.BufferId} #{m.Sequence}; its descriptor came as buffer {ahead.Message.BufferId} #{ahead.Message.Sequence}.");
                    }

                    return ahead.Record;
                }
            }

            if (_socketEnded)
            {
                throw new ChannelProtocolException(
                    ChannelErrorReason.PeerClosed, $"Pid {Peer.ProcessId} went away between buffer {m.BufferId}'s ring entry and its descriptor.");
            }

            if (!PumpSocket(deadline) && deadline.HasPassed)
            {
                throw new ChannelProtocolException(
                    ChannelErrorReason.RingCorrupt,
                    $"The ring announced buffer {m.BufferId}'s descriptor; none had come on the socket by the receive's deadline (at most the send timeout, {_sendTimeout}).");
            }

            if (IsClosed)
            {
                throw _ledger.ClosedException();
            }
        }
    }

    /// <summary>Wakes the peer if it sleeps on its futex (after a record on the socket it would not see there).</summary>
    private void NudgeRingPeer()
    {
        if (_ring is ChannelRing ring && ring.Enter())
        {
            try
            {
                ring.NudgeFutexSleeper();
            }
            finally
            {
                ring.Exit();
            }
        }
    }

    /// <summary>Drops the ring (unmapped once no access holds it) and every record waiting for its entry.</summary>
    private void CloseRing()
    {
        _ring?.Dispose();
        AbandonRingSetup();
        List<ReceivedRecord> ahead;
        lock (_ahead)
        {
            ahead = [.. _ahead.Select(a => a.Record)];
            _ahead.Clear();
        }

        foreach (ReceivedRecord r in ahead)
        {
            r.Dispose();
        }
    }
}

// Ownership: the first ReceiveAsync on the socket transport makes a duplicate of the channel's socket descriptor, owned
// by a System.Net.Sockets.Socket that only ever waits for readiness; close disposes it after shutting the socket down.
using System.Net.Sockets;
using System.Runtime.CompilerServices;

namespace DmaBuf.Linux;

/// <summary>The asynchronous API of <see cref="BufferChannel"/>.</summary>
/// <remarks>
/// <para><b>Waiting without a thread.</b> An asynchronous receive takes what has arrived without waiting; when nothing
/// has, it waits for readiness without holding a thread: on the socket transport a zero-byte peek on the socket wrapped
/// as a <see cref="Socket"/> (the runtime's I/O engine); on the ring transport it says in the region that it sleeps
/// (so the peer signals our wake-up socket) and waits for that socket or the channel's in the process's one readiness
/// poller (one wait on either of two descriptors, which the runtime's engine does not offer). Then it receives through the same path as
/// <see cref="Receive(TimeSpan)"/>: descriptors, checks and protocol errors are the same.</para>
/// <para><b>Cancellation</b> only ever interrupts the wait for readiness, never the handling of a message, so a
/// cancelled receive consumed nothing and the channel stays usable.</para>
/// </remarks>
public sealed partial class BufferChannel : IAsyncDisposable
{
    private readonly Lock _asyncLock = new();
    private Socket? _asyncSocket; // under _asyncLock
    private bool _asyncClosed;    // under _asyncLock: close disposed the socket; none may be made after it

    /// <summary>
    /// As <see cref="Receive()"/>, awaiting the next message without blocking a thread. Returns null when the connection
    /// has ended cleanly.
    /// </summary>
    /// <param name="cancellationToken">Cancels the wait; a cancelled receive took nothing, and the channel stays usable.</param>
    /// <exception cref="OperationCanceledException">Cancelled while waiting.</exception>
    /// <exception cref="ChannelProtocolException">The peer broke the protocol or died; the connection is closed.</exception>
    public async ValueTask<ChannelMessage?> ReceiveAsync(CancellationToken cancellationToken = default)
    {
        await _receiveGate.EnterAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            while (true)
            {
                ChannelMessage? m = ReceiveLocked(Deadline.Now);
                if (!ReferenceEquals(m, s_timedOut))
                {
                    return m;
                }

                await WaitForInputAsync(cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            _receiveGate.Exit();
        }
    }

    /// <summary>
    /// The buffers the peer sends, as they arrive, until the connection ends cleanly. Acknowledgements and releases that
    /// arrive meanwhile are consumed (the ledger and the pool have already acted on them). The caller disposes each
    /// buffer, which releases it to the peer.
    /// </summary>
    /// <param name="cancellationToken">Ends the enumeration with <see cref="OperationCanceledException"/>; the channel stays usable.</param>
    /// <exception cref="ChannelProtocolException">The peer broke the protocol or died; the connection is closed.</exception>
    public async IAsyncEnumerable<ReceivedBuffer> ReadAllAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        while (true)
        {
            ChannelMessage? m = await ReceiveAsync(cancellationToken).ConfigureAwait(false);
            if (m is null)
            {
                yield break;
            }

            if (m is ReceivedBuffer buffer)
            {
                yield return buffer;
            }
        }
    }

    /// <summary>
    /// As <see cref="SendBuffer"/>, awaiting room without blocking a thread. When the peer's socket buffer or our ring
    /// is full, nothing is begun: the send waits for the socket to have room (<c>POLLOUT</c>, in the process's one
    /// readiness poller) or, for a full ring, polls it every millisecond on a timer, then tries again. The message is
    /// committed only once there is room, and then goes out whole as <see cref="SendBuffer"/> sends it. The wait lasts at
    /// most <see cref="BufferChannelOptions.SendTimeout"/>, as a blocking send's does (the connection is then closed with
    /// <see cref="ChannelErrorReason.SendTimeout"/>).
    /// </summary>
    /// <param name="buffer">A Linux-backed buffer (borrowed, as in <see cref="SendBuffer"/>).</param>
    /// <param name="userData">64 bits of application data the peer sees.</param>
    /// <param name="transient">Send the descriptor every time and do not register it.</param>
    /// <param name="cancellationToken">Cancels the wait for room. A cancelled send sent nothing, registered nothing and
    /// took no sequence number; the channel stays usable.</param>
    /// <exception cref="OperationCanceledException">Cancelled while waiting for room; nothing was sent.</exception>
    /// <exception cref="ChannelProtocolException">The peer went away or stopped reading; the connection is closed.</exception>
    /// <exception cref="ObjectDisposedException">The channel or the handle was disposed.</exception>
    public async ValueTask<long> SendBufferAsync(DmaBufHandle buffer, ulong userData = 0, bool transient = false, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        Deadline deadline = Deadline.After(_sendTimeout);
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            long sequence = SendBufferCore(buffer, userData, transient, fence: null, deadline, onlyIfRoom: true, out bool ringFull);
            if (sequence >= 0)
            {
                return sequence;
            }

            if (deadline.HasPassed)
            {
                throw Fail(ChannelErrorReason.SendTimeout, $"Peer pid {Peer.ProcessId} did not take our messages for {_sendTimeout}; the buffer was not sent.");
            }

            await WaitForRoomAsync(ringFull, deadline, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>As <see cref="Dispose"/>, which never waits for the peer; a pending <see cref="ReceiveAsync"/> then returns null.</summary>
    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }

    /// <summary>Waits, without a thread, until the transport may have room (or the deadline passed, or the connection ended).</summary>
    private async Task WaitForRoomAsync(bool ringFull, Deadline deadline, CancellationToken cancellationToken)
    {
        if (ringFull)
        {
            if (_ring is ChannelRing ring)
            {
                await WaitForRingRoomAsync(ring, deadline, cancellationToken).ConfigureAwait(false);
            }

            return;
        }

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        if (!deadline.IsNever)
        {
            timeout.CancelAfter(Math.Max(1, deadline.RemainingMilliseconds));
        }
        try
        {
            await ReadinessPoller.Shared.WaitWritableAsync(_socket.Handle, timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            // the deadline: the caller tries once more, then reports the time-out
        }
    }

    /// <summary>
    /// Says in the ring that we wait for room, then awaits our wake-up socket (the consumer's signal when it frees a slot) for
    /// at most <see cref="ChannelRing.RoomWaitSliceMs"/>: a signal missed, or reset by a receiver of this channel, costs
    /// no more than that. The caller then tries the send again.
    /// </summary>
    private async Task WaitForRingRoomAsync(ChannelRing ring, Deadline deadline, CancellationToken cancellationToken)
    {
        if (!ring.Enter())
        {
            return; // closed: the next try reports it
        }

        try
        {
            ring.BeginRoomWait();
            if (HasRoomClosing(ring))
            {
                return;
            }

            using var slice = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            slice.CancelAfter(deadline.IsNever ? ChannelRing.RoomWaitSliceMs : Math.Clamp(deadline.RemainingMilliseconds, 1, ChannelRing.RoomWaitSliceMs));
            try
            {
                await ReadinessPoller.Shared.WaitAsync(ring.Wake, ring.Wake, slice.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                return; // the slice ended: look again
            }

            if (_receiveGate.TryEnter()) // nobody receives: the signal is ours to reset
            {
                try
                {
                    ring.DrainWake();
                }
                finally
                {
                    _receiveGate.Exit();
                }
            }
        }
        catch (ObjectDisposedException)
        {
            // closed meanwhile: the next try reports it
        }
        finally
        {
            ring.EndRoomWait();
            ring.Exit();
        }
    }

    /// <summary>Waits, without a thread, until something may have arrived (or the connection ended).</summary>
    private async Task WaitForInputAsync(CancellationToken cancellationToken)
    {
        if (_ring is ChannelRing ring)
        {
            await WaitForRingInputAsync(ring, cancellationToken).ConfigureAwait(false);
            return;
        }

        Socket? socket = AsyncSocket();
        if (socket is null)
        {
            return; // closed: the next receive sees it
        }

        try
        {
            // MSG_PEEK: a zero-byte read of a seqpacket socket would consume (and truncate) the next record.
            _ = await socket.ReceiveAsync(Memory<byte>.Empty, SocketFlags.Peek, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // An error, a reset, or closed meanwhile: the next receive sees and reports it.
        }
    }

    /// <summary>Says we sleep, then waits for our wake-up socket (the peer's signal) or the socket (descriptors, pings, a hang-up).</summary>
    private async Task WaitForRingInputAsync(ChannelRing ring, CancellationToken cancellationToken)
    {
        if (!ring.Enter())
        {
            return; // closed
        }

        try
        {
            ring.SetSleeping(true);
            if (!ring.HasInput())
            {
                await ReadinessPoller.Shared.WaitAsync(_socket.Handle, ring.Wake, cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            ring.SetSleeping(false);
            try
            {
                ring.DrainWake(); // the ring is read next, so a wake-up consumed here is never lost
            }
            catch (ObjectDisposedException)
            {
                // closed meanwhile: the next receive sees it
            }

            ring.Exit();
        }
    }

    /// <summary>The socket wrapped for the runtime's I/O engine, made at first use; null once the channel is closed.</summary>
    private Socket? AsyncSocket()
    {
        lock (_asyncLock)
        {
            if (_asyncSocket is not null || _asyncClosed)
            {
                return _asyncSocket;
            }

#pragma warning disable CA2000 // the number passes to the socket handle, and the handle to the Socket, which close disposes
            SafeFdHandle duplicate;
            try
            {
                duplicate = Interop.Libc.Duplicate(_socket.Handle);
            }
            catch (ObjectDisposedException)
            {
                return null;
            }

            var handle = new SafeSocketHandle(duplicate.DangerousGetHandle(), ownsHandle: true);
            duplicate.SetHandleAsInvalid(); // the socket handle owns the number now
            try
            {
                _asyncSocket = new Socket(handle);
            }
            catch
            {
                handle.Dispose();
                throw;
            }
#pragma warning restore CA2000

            return _asyncSocket;
        }
    }

    /// <summary>Disposes the wrapped socket, if one was made (after the channel's socket was shut down).</summary>
    private void CloseAsync()
    {
        Socket? socket;
        lock (_asyncLock)
        {
            socket = _asyncSocket;
            _asyncSocket = null;
            _asyncClosed = true;
        }

        socket?.Dispose();
    }
}

// Ownership: a ReceivedBuffer owns one reference to the imported buffer, or, for an id-only delivery of a registered
// buffer that is mapped, one lease on the registration's mapping (which keeps the mapping and the buffer alive; Handle
// then makes its reference at first use). Disposing it drops what it holds and tells the sender the buffer is released
// (which returns it to the sender's pool). Keep the buffer longer by duplicating Handle before disposing.
namespace DmaBuf.Linux;

/// <summary>Something <see cref="BufferChannel.Receive()"/> returns.</summary>
public abstract class ChannelMessage
{
    private protected ChannelMessage()
    {
    }
}

/// <summary>A buffer the peer sent. Dispose it to release it back to the peer.</summary>
public sealed class ReceivedBuffer : ChannelMessage, IDisposable
{
    private readonly BufferChannel _channel;
    private readonly FrameLease? _lease;
    private readonly long _leaseGeneration;
    private DmaBufHandle? _handle;
    private int _disposed;

    internal ReceivedBuffer(
        BufferChannel channel, long remoteBufferId, long sequence, ulong userData, DmaBufHandle? handle, bool carriedFd, bool transient,
        long heldBytes = 0, FrameLease? lease = null, KernelSyncFile? fence = null)
    {
        Fence = fence;
        HeldBytes = heldBytes;
        _channel = channel;
        RemoteBufferId = remoteBufferId;
        Sequence = sequence;
        UserData = userData;
        _handle = handle;
        _lease = lease;
        _leaseGeneration = lease?.Generation ?? 0;
        CarriedFd = carriedFd;
        IsTransient = transient;
    }

    /// <summary>The channel the buffer came on.</summary>
    internal BufferChannel Channel => _channel;

    /// <summary>The sender's id of the buffer.</summary>
    public long RemoteBufferId { get; }

    /// <summary>The sender's sequence number of this delivery.</summary>
    public long Sequence { get; }

    /// <summary>The sender's 64 bits of application data (a frame number, a checksum).</summary>
    public ulong UserData { get; }

    /// <summary>The reference this delivery holds; valid until <see cref="Dispose"/>.</summary>
    /// <remarks>For an id-only delivery read through <see cref="Frame"/>, the reference is made at the first use of
    /// this property (the frame alone needs none).</remarks>
    /// <exception cref="ObjectDisposedException">First used after <see cref="Dispose"/>.</exception>
    public DmaBufHandle Handle
    {
        get
        {
            DmaBufHandle? h = Volatile.Read(ref _handle);
            if (h is not null)
            {
                return h;
            }

            FrameLease lease = _lease!; // a delivery made without a handle always has a lease
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0 || !lease.IsLive(_leaseGeneration), this);
            DmaBufHandle made = lease.Mapping.Reference!.Duplicate(); // alive: our lease holds the mapping, which holds it
            DmaBufHandle? raced = Interlocked.CompareExchange(ref _handle, made, null);
            if (raced is not null)
            {
                made.Dispose();
                return raced;
            }

            if (Volatile.Read(ref _disposed) != 0)
            {
                made.Dispose(); // disposed meanwhile: Dispose may have missed it (disposing twice is harmless)
                throw new ObjectDisposedException(nameof(ReceivedBuffer));
            }

            return made;
        }
    }

    /// <summary>Whether <see cref="Frame"/> is available (a registered buffer this process could map once).</summary>
    public bool HasFrame => _lease is not null;

    /// <summary>
    /// The frame's bytes in place through the registration's one CPU mapping, with no mapping-cache lookup, no new
    /// reference and no allocation; valid until <see cref="Dispose"/>, after which it throws
    /// <see cref="ObjectDisposedException"/>.
    /// </summary>
    /// <exception cref="InvalidOperationException">No frame (<see cref="HasFrame"/> is false: a transient delivery, or a
    /// buffer that could not be mapped); map <see cref="Handle"/> instead.</exception>
    public ReceivedFrame Frame => _lease is FrameLease lease
        ? new ReceivedFrame(lease, _leaseGeneration)
        : throw new InvalidOperationException($"Buffer {RemoteBufferId} #{Sequence} has no registered mapping (transient or not mappable); map Handle instead.");

    /// <summary>
    /// The sync_file the sender sent with the frame (<see cref="BufferChannel.SendBufferWithFence"/>), checked to be one;
    /// null when it sent none. Owned by this delivery and closed by <see cref="Dispose"/>.
    /// </summary>
    public KernelSyncFile? Fence { get; }

    /// <summary>Waits up to <paramref name="timeout"/> for <see cref="Fence"/> to signal, i.e. for the sender's writer to
    /// finish the frame; true at once when the frame came with no fence.</summary>
    /// <returns>True once signaled (or no fence); false if the timeout passed first.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The timeout is negative and not infinite, or too large.</exception>
    /// <exception cref="ObjectDisposedException">The delivery was disposed.</exception>
    public bool WaitForFence(TimeSpan timeout)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        return Fence is not { } fence || fence.Wait(timeout);
    }

    /// <summary>Whether the message carried the descriptor (the first send of the buffer, or a transient one).</summary>
    public bool CarriedFd { get; }

    /// <summary>Whether the sender asked not to register the buffer (every send carries the descriptor).</summary>
    public bool IsTransient { get; }

    /// <summary>Whether <see cref="Dispose"/> was called (its release then goes, or went, to the peer).</summary>
    internal bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    /// <summary>Bytes of the connection's resident budget this delivery holds (a transient one) until disposed.</summary>
    internal long HeldBytes { get; }

    /// <summary>Closes the fence, drops the reference and sends the release to the peer (unless the connection is closed). Idempotent.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            Fence?.Dispose();
            Volatile.Read(ref _handle)?.Dispose(); // the field stays: Handle then returns the disposed handle, as before
            _lease?.Dispose(_leaseGeneration);
            _channel.SendReleaseQuietly(this);
        }
    }

    /// <inheritdoc/>
    public override string ToString() => $"buffer {RemoteBufferId} #{Sequence} ({(object?)Volatile.Read(ref _handle) ?? "mapped once for its registration"})";
}

/// <summary>The peer holds a buffer we sent (it mapped it, or whatever its acknowledgement means).</summary>
/// <param name="bufferId">Our buffer id.</param>
/// <param name="sequence">The sequence number the send returned.</param>
/// <param name="userData">The peer's 64 bits of application data.</param>
public sealed class BufferAcknowledged(long bufferId, long sequence, ulong userData) : ChannelMessage
{
    /// <summary>Our buffer id.</summary>
    public long BufferId { get; } = bufferId;

    /// <summary>The sequence number the send returned.</summary>
    public long Sequence { get; } = sequence;

    /// <summary>The peer's application data.</summary>
    public ulong UserData { get; } = userData;
}

/// <summary>The peer is done with a buffer we sent. If the channel has a pool, the buffer went back to it.</summary>
/// <param name="bufferId">Our buffer id.</param>
/// <param name="sequence">The sequence number the send returned.</param>
/// <param name="returnedToPool">Whether this release returned the buffer to the channel's pool.</param>
public sealed class BufferReleased(long bufferId, long sequence, bool returnedToPool) : ChannelMessage
{
    /// <summary>Our buffer id.</summary>
    public long BufferId { get; } = bufferId;

    /// <summary>The sequence number the send returned.</summary>
    public long Sequence { get; } = sequence;

    /// <summary>Whether this release returned the buffer to the channel's pool.</summary>
    public bool ReturnedToPool { get; } = returnedToPool;
}

// Ownership: a ReceivedBuffer owns one reference to the imported buffer. Disposing it drops that reference and tells
// the sender the buffer is released (which returns it to the sender's pool). Keep the buffer longer by duplicating
// Handle before disposing.
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
    private int _disposed;

    internal ReceivedBuffer(
        BufferChannel channel, long remoteBufferId, long sequence, ulong userData, DmaBufHandle handle, bool carriedFd, bool transient, long heldBytes = 0)
    {
        HeldBytes = heldBytes;
        _channel = channel;
        RemoteBufferId = remoteBufferId;
        Sequence = sequence;
        UserData = userData;
        Handle = handle;
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
    public DmaBufHandle Handle { get; }

    /// <summary>Whether the message carried the descriptor (the first send of the buffer, or a transient one).</summary>
    public bool CarriedFd { get; }

    /// <summary>Whether the sender asked not to register the buffer (every send carries the descriptor).</summary>
    public bool IsTransient { get; }

    /// <summary>Bytes of the connection's resident budget this delivery holds (a transient one) until disposed.</summary>
    internal long HeldBytes { get; }

    /// <summary>Drops the reference and sends the release to the peer (unless the connection is closed). Idempotent.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            Handle.Dispose();
            _channel.SendReleaseQuietly(this);
        }
    }

    /// <inheritdoc/>
    public override string ToString() => $"buffer {RemoteBufferId} #{Sequence} ({Handle})";
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

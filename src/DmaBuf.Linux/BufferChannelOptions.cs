namespace DmaBuf.Linux;

/// <summary>Credentials of the process at the other end of a connection (<c>SO_PEERCRED</c>).</summary>
/// <param name="ProcessId">Its pid (at connect time).</param>
/// <param name="UserId">Its effective uid.</param>
/// <param name="GroupId">Its effective gid.</param>
public readonly record struct PeerCredentials(int ProcessId, uint UserId, uint GroupId);

/// <summary>Counters of one channel.</summary>
/// <param name="MessagesSent">Messages sent.</param>
/// <param name="MessagesReceived">Messages received.</param>
/// <param name="FdsSent">Descriptors sent.</param>
/// <param name="FdsReceived">Descriptors received (including refused ones).</param>
public readonly record struct ChannelStatistics(long MessagesSent, long MessagesReceived, long FdsSent, long FdsReceived);

/// <summary>Settings of a <see cref="BufferChannel"/>.</summary>
/// <remarks>
/// The limits bound what a peer can make this side hold: at most <see cref="MaxRegisteredBuffers"/> registrations
/// and <see cref="MaxResidentBytes"/> bytes of its buffers (registered ones plus transient deliveries not yet
/// disposed), each at most the import cache's <see cref="ImportCache.MaxBufferSize"/>; and how long a peer that stops
/// reading can hold up a send (<see cref="SendTimeout"/>). A peer beyond a limit gets its connection closed.
/// </remarks>
public sealed class BufferChannelOptions
{
    /// <summary>The default of <see cref="MaxRegisteredBuffers"/>: 256.</summary>
    public const int DefaultMaxRegisteredBuffers = 256;

    /// <summary>The default of <see cref="MaxResidentBytes"/>: 1 GiB.</summary>
    public const long DefaultMaxResidentBytes = 1L << 30;

    private readonly TimeSpan _sendTimeout = DefaultSendTimeout;
    private readonly TimeSpan _spinBudget = DefaultSpinBudget;

    /// <summary>The default of <see cref="SendTimeout"/>: 10 seconds.</summary>
    public static TimeSpan DefaultSendTimeout { get; } = TimeSpan.FromSeconds(10);

    /// <summary>The default of <see cref="SpinBudget"/>: 50 microseconds.</summary>
    public static TimeSpan DefaultSpinBudget { get; } = TimeSpan.FromMicroseconds(50);

    /// <summary>Where received descriptors are imported; <see cref="ImportCache.Shared"/> when null.</summary>
    public ImportCache? ImportCache { get; init; }

    /// <summary>
    /// The pool sent buffers return to when the peer releases them or goes away. The channel holds each rented buffer
    /// while a delivery of it is out, so several channels (a listener's, say) may share one pool; sending one of its
    /// buffers that is not rented is refused (<see cref="InvalidOperationException"/>).
    /// </summary>
    public BufferPool? ReturnTo { get; init; }

    /// <summary>The uid the peer must have; null: our effective uid (the default check).</summary>
    public uint? AllowedUserId { get; init; }

    /// <summary>Skip the uid check (any local user may connect). Off by default.</summary>
    public bool AllowAnyUser { get; init; }

    /// <summary>If set, the peer must be this process (e.g. the child we started).</summary>
    public int? ExpectedProcessId { get; init; }

    /// <summary>
    /// How many buffer ids the peer may register with us at once, and how many of its transient deliveries we hold at
    /// once (each holds a descriptor until disposed); <see cref="DefaultMaxRegisteredBuffers"/>.
    /// </summary>
    public int MaxRegisteredBuffers { get; init; } = DefaultMaxRegisteredBuffers;

    /// <summary>
    /// How many bytes of its buffers the peer may make us map at once (the sum of the sizes of the buffers it registered
    /// with us and of transient deliveries not yet disposed); <see cref="DefaultMaxResidentBytes"/>. Checked before a
    /// descriptor is imported. A peer's sparse memfd counts by its claimed size: it is never pre-faulted here.
    /// </summary>
    public long MaxResidentBytes { get; init; } = DefaultMaxResidentBytes;

    /// <summary>
    /// What carries the messages that are not descriptors: the socket (<see cref="ChannelTransport.Socket"/>, the
    /// default) or a shared-memory ring beside it (<see cref="ChannelTransport.Ring"/>). Both sides must choose the same.
    /// </summary>
    public ChannelTransport Transport { get; init; }

    /// <summary>
    /// Acknowledge every delivery on receipt: the channel sends the acknowledgement (user data 0) as soon as it holds the
    /// buffer (an id-only delivery leased through its registration's mapping, or a descriptor imported), before
    /// <see cref="BufferChannel.Receive()"/> returns it, so the sender learns it from inside the receive path rather than
    /// after the application's own call to <see cref="BufferChannel.Acknowledge"/>. Off by default. The acknowledgement says
    /// the buffer is held, not that a fence sent with it has signalled; calling <see cref="BufferChannel.Acknowledge"/> as
    /// well sends a second one. A failed send closes the connection, and the delivery is disposed unseen.
    /// </summary>
    public bool AcknowledgeOnReceipt { get; init; }

    /// <summary>How a ring-transport channel waits for the peer; <see cref="RingWait.Hybrid"/> by default.</summary>
    public RingWait Wait { get; init; }

    /// <summary>How long <see cref="RingWait.Hybrid"/> spins before it sleeps; <see cref="DefaultSpinBudget"/> by default.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Negative, or infinite.</exception>
    public TimeSpan SpinBudget
    {
        get => _spinBudget;
        init
        {
            if (value < TimeSpan.Zero || value == Timeout.InfiniteTimeSpan)
            {
                throw new ArgumentOutOfRangeException(nameof(value), value, "A spin budget must be zero or positive, and finite.");
            }

            _spinBudget = value;
        }
    }

    /// <summary>
    /// The deadline of every send (a buffer, an acknowledgement, a release, a forget, a pong), counted from the call,
    /// including any wait for another thread's send; <see cref="DefaultSendTimeout"/>. A send that misses it closes the
    /// connection (<see cref="ChannelErrorReason.SendTimeout"/>): a peer that stops reading cannot hang us.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Not positive, or infinite.</exception>
    public TimeSpan SendTimeout
    {
        get => _sendTimeout;
        init
        {
            if (value <= TimeSpan.Zero || value == Timeout.InfiniteTimeSpan)
            {
                throw new ArgumentOutOfRangeException(nameof(value), value, "A send timeout must be positive and finite.");
            }

            _sendTimeout = value;
        }
    }
}

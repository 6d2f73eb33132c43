namespace DmaBuf.Linux;

/// <summary>Why a peer's message or descriptor was refused, or why a connection ended badly.</summary>
public enum ChannelErrorReason
{
    /// <summary>Not a refusal: used only where no reason applies.</summary>
    None = 0,

    /// <summary>The message does not start with the protocol's magic number.</summary>
    BadMagic,

    /// <summary>The message has a protocol version this side does not speak.</summary>
    UnsupportedVersion,

    /// <summary>The message's size is not the size its header and type call for.</summary>
    WrongSize,

    /// <summary>The message type is unknown.</summary>
    UnknownMessageType,

    /// <summary>The header has flag bits that are unknown or not allowed on this message type.</summary>
    BadFlags,

    /// <summary>A buffer id that this connection does not know (never sent with its descriptor, or forgotten).</summary>
    UnknownBufferId,

    /// <summary>A descriptor was sent again for a buffer id that is already registered.</summary>
    DuplicateBufferId,

    /// <summary>The message says it carries a descriptor and none came with it.</summary>
    MissingFd,

    /// <summary>A descriptor came with a message that does not take one.</summary>
    UnexpectedFd,

    /// <summary>More descriptors came than the message takes, or the kernel truncated them (<c>MSG_CTRUNC</c>).</summary>
    SurplusFds,

    /// <summary>The descriptor is not a memfd or a dma-buf (a pipe, a socket, a regular file), or not open read-write.</summary>
    NotASharedBuffer,

    /// <summary>The buffer is smaller than the size the message claims (<c>fstat</c> <c>st_size</c>).</summary>
    BufferTooSmall,

    /// <summary>The memfd is not sealed against shrinking: the peer could truncate it and SIGBUS us.</summary>
    NotSealed,

    /// <summary>The claimed size is not positive, above the limit, or differs from the buffer's known size.</summary>
    BadBufferSize,

    /// <summary>
    /// The peer registered more buffers than this side allows, or made it hold more transient deliveries at once
    /// (<see cref="BufferChannelOptions.MaxRegisteredBuffers"/> bounds both), or sent more messages than a ping's wait
    /// holds while it waits for the pong.
    /// </summary>
    TooManyBuffers,

    /// <summary>The peer closed the connection, or died, without saying goodbye.</summary>
    PeerClosed,

    /// <summary>The peer's credentials (<c>SO_PEERCRED</c>) are not the ones allowed.</summary>
    PeerCredentials,

    /// <summary>The peer sent a message after its goodbye; it was refused, not processed.</summary>
    MessageAfterGoodbye,

    /// <summary>
    /// The peer's buffers would make us hold more bytes mapped than the connection allows
    /// (<see cref="BufferChannelOptions.MaxResidentBytes"/>).
    /// </summary>
    ResidentBudget,

    /// <summary>A send missed its deadline (<see cref="BufferChannelOptions.SendTimeout"/>): the peer stopped reading.</summary>
    SendTimeout,

    /// <summary>This side failed to handle the connection (out of memory, too many open files, a socket error).</summary>
    LocalFailure,

    /// <summary>
    /// The shared control ring broke its rules (a head or tail out of bounds, an entry not stamped with its position,
    /// a sequence going back, an entry of a kind the ring does not carry, or one announcing a descriptor that never came
    /// on the socket), or the ring was not set up as agreed.
    /// </summary>
    RingCorrupt,

    /// <summary>
    /// A frame said a fence follows and the descriptor that came with it is not a sync_file (<c>SYNC_IOC_FILE_INFO</c>
    /// failed); it was closed.
    /// </summary>
    NotASyncFile,
}

/// <summary>
/// A peer broke the channel protocol or sent something unsafe. The connection it came on is closed; nothing else is
/// affected, and every descriptor and mapping it brought was released.
/// </summary>
public sealed class ChannelProtocolException : IOException
{
    /// <summary>Creates the exception for <paramref name="reason"/>.</summary>
    public ChannelProtocolException(ChannelErrorReason reason, string message, Exception? inner = null)
        : base($"{reason}: {message}", inner) => Reason = reason;

    /// <summary>Creates the exception with a message.</summary>
    public ChannelProtocolException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and inner exception.</summary>
    public ChannelProtocolException(string message, Exception inner)
        : base(message, inner)
    {
    }

    /// <summary>Creates the exception with no message.</summary>
    public ChannelProtocolException()
    {
    }

    /// <summary>Why.</summary>
    public ChannelErrorReason Reason { get; }
}

/// <summary>A descriptor offered for import is not a buffer we can safely map. The descriptor was closed.</summary>
public sealed class BufferImportException : IOException
{
    /// <summary>Creates the exception for <paramref name="reason"/>.</summary>
    public BufferImportException(ChannelErrorReason reason, string message, Exception? inner = null)
        : base(message, inner) => Reason = reason;

    /// <summary>Creates the exception with a message.</summary>
    public BufferImportException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and inner exception.</summary>
    public BufferImportException(string message, Exception inner)
        : base(message, inner)
    {
    }

    /// <summary>Creates the exception with no message.</summary>
    public BufferImportException()
    {
    }

    /// <summary>Why the descriptor was refused.</summary>
    public ChannelErrorReason Reason { get; }
}

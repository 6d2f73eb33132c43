using System.Buffers.Binary;

namespace DmaBuf.Linux;

/// <summary>Message types of the buffer channel (docs/wire-format.md).</summary>
internal enum MessageType : ushort
{
    Buffer = 1,
    Ack = 2,
    Release = 3,
    Forget = 4,
    Ping = 5,
    Pong = 6,
    Goodbye = 7,

    /// <summary>Ring transport, once at connect: our ring region and the signal end of our wake-up socket pair (two descriptors).</summary>
    RingSetup = 8,
}

/// <summary>Header flags.</summary>
[Flags]
internal enum MessageFlags : uint
{
    None = 0,

    /// <summary>The message carries one descriptor (SCM_RIGHTS).</summary>
    FdAttached = 1,

    /// <summary>Buffer message: the receiver must not register the id; the buffer is valid for this delivery only.</summary>
    Transient = 2,

    /// <summary>Buffer message: a sync_file descriptor follows the buffer's (or comes alone on an id-only send); the
    /// receiver waits for it before reading the frame.</summary>
    FenceAttached = 4,
}

/// <summary>One decoded message; fields a type does not have are zero.</summary>
internal readonly record struct WireMessage(
    MessageType Type, MessageFlags Flags = MessageFlags.None, long BufferId = 0, long Sequence = 0, long Size = 0, ulong UserData = 0);

/// <summary>
/// The channel's wire format, version 1: a fixed 16-byte header (magic, version, type, length, flags) and a fixed body
/// per type, all little-endian. One message per <c>SOCK_SEQPACKET</c> record. Documented in docs/wire-format.md.
/// </summary>
internal static class WireFormat
{
    /// <summary>"DBUF" in the first four bytes.</summary>
    internal const uint Magic = 0x46554244;

    internal const ushort Version = 1;

    internal const int HeaderSize = 16;

    /// <summary>The largest message (Buffer).</summary>
    internal const int MaxMessageSize = 48;

    internal static int SizeOf(MessageType type) => type switch
    {
        MessageType.Buffer => 48,
        MessageType.Ack => 40,
        MessageType.Release => 32,
        MessageType.Forget => 24,
        MessageType.Ping or MessageType.Pong or MessageType.Goodbye => HeaderSize,
        MessageType.RingSetup => 32,
        _ => -1,
    };

    /// <summary>Writes <paramref name="m"/> and returns its length.</summary>
    internal static int Encode(in WireMessage m, Span<byte> destination)
    {
        int length = SizeOf(m.Type);
        Span<byte> d = destination[..length];
        d.Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(d, Magic);
        BinaryPrimitives.WriteUInt16LittleEndian(d[4..], Version);
        BinaryPrimitives.WriteUInt16LittleEndian(d[6..], (ushort)m.Type);
        BinaryPrimitives.WriteUInt32LittleEndian(d[8..], (uint)length);
        BinaryPrimitives.WriteUInt32LittleEndian(d[12..], (uint)m.Flags);
        switch (m.Type)
        {
            case MessageType.Buffer:
                BinaryPrimitives.WriteInt64LittleEndian(d[16..], m.BufferId);
                BinaryPrimitives.WriteInt64LittleEndian(d[24..], m.Sequence);
                BinaryPrimitives.WriteInt64LittleEndian(d[32..], m.Size);
                BinaryPrimitives.WriteUInt64LittleEndian(d[40..], m.UserData);
                break;
            case MessageType.Ack:
                BinaryPrimitives.WriteInt64LittleEndian(d[16..], m.BufferId);
                BinaryPrimitives.WriteInt64LittleEndian(d[24..], m.Sequence);
                BinaryPrimitives.WriteUInt64LittleEndian(d[32..], m.UserData);
                break;
            case MessageType.Release:
                BinaryPrimitives.WriteInt64LittleEndian(d[16..], m.BufferId);
                BinaryPrimitives.WriteInt64LittleEndian(d[24..], m.Sequence);
                break;
            case MessageType.Forget:
                BinaryPrimitives.WriteInt64LittleEndian(d[16..], m.BufferId);
                break;
            case MessageType.RingSetup:
                BinaryPrimitives.WriteInt64LittleEndian(d[16..], m.Size);
                BinaryPrimitives.WriteUInt64LittleEndian(d[24..], m.UserData); // capacity << 32 | version << 16 | entry size
                break;
        }

        return length;
    }

    /// <summary>
    /// Decodes one received record of <paramref name="data"/>.Length bytes that came with <paramref name="fds"/>
    /// descriptors, checking everything a peer could get wrong.
    /// </summary>
    /// <exception cref="ChannelProtocolException">The record is not a valid message.</exception>
    internal static WireMessage Decode(ReadOnlySpan<byte> data, int fds)
    {
        if (data.Length < HeaderSize)
        {
            throw new ChannelProtocolException(ChannelErrorReason.WrongSize, $"A {data.Length}-byte message is shorter than the {HeaderSize}-byte header.");
        }

        uint magic = BinaryPrimitives.ReadUInt32LittleEndian(data);
        if (magic != Magic)
        {
            throw new ChannelProtocolException(ChannelErrorReason.BadMagic, $"Magic 0x{magic:x8} is not 0x{Magic:x8} (\"DBUF\").");
        }

        ushort version = BinaryPrimitives.ReadUInt16LittleEndian(data[4..]);
        if (version != Version)
        {
            throw new ChannelProtocolException(ChannelErrorReason.UnsupportedVersion, $"Protocol version {version}; this side speaks version {Version}.");
        }

        var type = (MessageType)BinaryPrimitives.ReadUInt16LittleEndian(data[6..]);
        int expected = SizeOf(type);
        if (expected < 0)
        {
            throw new ChannelProtocolException(ChannelErrorReason.UnknownMessageType, $"Message type {(ushort)type} is unknown.");
        }

        uint length = BinaryPrimitives.ReadUInt32LittleEndian(data[8..]);
        if (length != (uint)data.Length || length != (uint)expected)
        {
            throw new ChannelProtocolException(
                ChannelErrorReason.WrongSize, $"{type} message: header says {length} bytes, {data.Length} arrived, the type takes {expected}.");
        }

        var flags = (MessageFlags)BinaryPrimitives.ReadUInt32LittleEndian(data[12..]);
        MessageFlags allowed = type switch
        {
            MessageType.Buffer => MessageFlags.FdAttached | MessageFlags.Transient | MessageFlags.FenceAttached,
            MessageType.RingSetup => MessageFlags.FdAttached,
            _ => MessageFlags.None,
        };
        if ((flags & ~allowed) != 0 || (flags.HasFlag(MessageFlags.Transient) && !flags.HasFlag(MessageFlags.FdAttached)))
        {
            throw new ChannelProtocolException(ChannelErrorReason.BadFlags, $"Flags 0x{(uint)flags:x} are not valid on a {type} message.");
        }

        bool wantsFd = flags.HasFlag(MessageFlags.FdAttached);
        bool wantsFence = flags.HasFlag(MessageFlags.FenceAttached);
        int takes = type == MessageType.RingSetup ? (wantsFd ? 2 : 0) : (wantsFd ? 1 : 0) + (wantsFence ? 1 : 0);
        if (takes > 0 && fds == 0)
        {
            string what = wantsFd ? "a descriptor" : "a fence (sync_file) descriptor";
            throw new ChannelProtocolException(ChannelErrorReason.MissingFd, $"The {type} message says it carries {what}; none came.");
        }

        if (takes == 0 && fds > 0)
        {
            throw new ChannelProtocolException(ChannelErrorReason.UnexpectedFd, $"{fds} descriptor(s) came with a {type} message that takes none.");
        }

        if (fds < takes)
        {
            throw new ChannelProtocolException(ChannelErrorReason.MissingFd, $"The {type} message takes {takes} descriptors; {fds} came.");
        }

        if (fds > takes)
        {
            throw new ChannelProtocolException(ChannelErrorReason.SurplusFds, $"{fds} descriptors came with a {type} message that takes {takes}.");
        }

        return type switch
        {
            MessageType.Buffer => new WireMessage(
                type, flags,
                BinaryPrimitives.ReadInt64LittleEndian(data[16..]),
                BinaryPrimitives.ReadInt64LittleEndian(data[24..]),
                BinaryPrimitives.ReadInt64LittleEndian(data[32..]),
                BinaryPrimitives.ReadUInt64LittleEndian(data[40..])),
            MessageType.Ack => new WireMessage(
                type, flags,
                BinaryPrimitives.ReadInt64LittleEndian(data[16..]),
                BinaryPrimitives.ReadInt64LittleEndian(data[24..]),
                UserData: BinaryPrimitives.ReadUInt64LittleEndian(data[32..])),
            MessageType.Release => new WireMessage(
                type, flags,
                BinaryPrimitives.ReadInt64LittleEndian(data[16..]),
                BinaryPrimitives.ReadInt64LittleEndian(data[24..])),
            MessageType.Forget => new WireMessage(type, flags, BinaryPrimitives.ReadInt64LittleEndian(data[16..])),
            MessageType.RingSetup => new WireMessage(
                type, flags, Size: BinaryPrimitives.ReadInt64LittleEndian(data[16..]), UserData: BinaryPrimitives.ReadUInt64LittleEndian(data[24..])),
            _ => new WireMessage(type, flags),
        };
    }
}

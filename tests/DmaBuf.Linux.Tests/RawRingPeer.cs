namespace DmaBuf.Linux.Tests;

/// <summary>
/// A raw peer of the ring transport: its own region, written by hand, and the channel's region, read by hand; our
/// channel on the other end.
/// </summary>
internal sealed unsafe class RawRingPeer : IDisposable
{
    internal static readonly WireMessage Setup = BufferChannel.SetupMessage();

    private readonly ChannelSocket _socket;
    private readonly nint _region;   // the peer's region: we are its producer
    private readonly nint _ours;     // the channel's region, as the peer maps it: we are its consumer
    private long _head;
    private long _tail;
    private bool _disposed;

    public RawRingPeer(ImportCache imports)
        : this(new BufferChannelOptions
        {
            ImportCache = imports, Transport = ChannelTransport.Ring, Wait = RingWait.Hybrid, SendTimeout = TimeSpan.FromMilliseconds(300),
        })
    {
    }

    /// <summary>The ring's setup by hand, then our channel with <paramref name="options"/> (which must choose the ring).</summary>
    public RawRingPeer(BufferChannelOptions options)
    {
        Assert.Equal(ChannelTransport.Ring, options.Transport);
        (SafeFdHandle ours, SafeFdHandle theirs) = Interop.Libc.SocketPair(Interop.Libc.SOCK_SEQPACKET);
        _socket = new ChannelSocket(theirs);
        (SafeFdHandle region, SafeFdHandle wait, SafeFdHandle signal) = ChannelRing.CreateOurs();
        using (region)
        using (wait) // this peer never sleeps: the channel's signals find its end closed, which costs the channel nothing
        using (signal)
        {
            _region = Interop.Libc.MapShared(region, ChannelRing.RegionSize, populate: true);
            Assert.Equal(SendStatus.Sent, _socket.Send(RawPeer.Encode(Setup), region, signal, Deadline.Never));
        }

        Channel = BufferChannel.FromSocket(ours, options);

        Span<byte> data = stackalloc byte[ChannelSocket.MaxRecord];
        Assert.Equal(ReceiveStatus.Record, _socket.Receive(data, Deadline.Never, out ReceivedRecord? record, out _));
        using (record)
        {
            Assert.Equal(2, record!.DescriptorCount);
            using SafeFdHandle theirRegion = record.TakeDescriptor();
            using SafeFdHandle theirEvent = record.TakeDescriptor();
            _ours = Interop.Libc.MapShared(theirRegion, ChannelRing.RegionSize, populate: false);
        }
    }

    public BufferChannel Channel { get; }

    /// <summary>Writes the entry at the next position, then its stamp (by default the position plus one, as the ring's producer does).</summary>
    public void Publish(RingEntry entry, long? stamp = null)
    {
        RingEntry* slot = ChannelRing.Slot(_region, _head);
        ChannelRing.WriteFields(slot, entry); // the stamp last, as the ring's producer writes it
        _head++;
        Volatile.Write(ref slot->Stamp, stamp ?? _head);
    }

    public void WriteStamp(long position, long stamp) => Volatile.Write(ref ChannelRing.Slot(_region, position)->Stamp, stamp);

    public void WriteOurTail(long tail) => Volatile.Write(ref *(long*)(_ours + ChannelRing.TailOffset), tail);

    /// <summary>
    /// Takes the channel's next entry, if it published one, and moves the tail past it, as the ring's consumer does (a
    /// peer that never consumes would fill the ring, and the channel's sends would time out). The mapping outlives the
    /// channel's close, so what it published before closing can still be taken.
    /// </summary>
    public bool TryTake(out RingEntry entry)
    {
        RingEntry* slot = ChannelRing.Slot(_ours, _tail);
        if (Volatile.Read(ref slot->Stamp) != _tail + 1)
        {
            entry = default;
            return false; // nothing published there yet (our channel writes no other stamp)
        }

        entry = *slot;
        _tail++;
        WriteOurTail(_tail);
        return true;
    }

    public void SendRecord(in WireMessage m, SafeFdHandle? fd = null, SafeFdHandle? second = null) =>
        Assert.Equal(SendStatus.Sent, _socket.Send(RawPeer.Encode(m), fd, second, Deadline.Never));

    public void Die() => _socket.Dispose();

    /// <summary>Idempotent: a second unmap could take away a mapping made since at the same address.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _socket.Dispose();
        Channel.Dispose();
        Interop.Libc.Unmap(_region, ChannelRing.RegionSize);
        Interop.Libc.Unmap(_ours, ChannelRing.RegionSize);
    }
}

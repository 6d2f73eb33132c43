// Ownership: a ChannelRing owns two mappings (our outbound region, which we created, and the peer's, which it sent)
// and two descriptors (our eventfd, which we wait on, and the peer's, which we signal). The mappings live in
// MappedRegion handles: every access holds a reference (Enter/Exit), so a close on another thread unmaps only after
// the last access ended. Nothing in the shared pages is trusted: our positions (the head we publish, the tail we
// consume up to) live in this object, and every value read from the pages is copied out once and checked.
using System.Diagnostics;
using System.Runtime.InteropServices;

namespace DmaBuf.Linux;

/// <summary>How a ring-transport channel waits for the peer (see <see cref="BufferChannelOptions.Wait"/>).</summary>
public enum RingWait
{
    /// <summary>Spin for <see cref="BufferChannelOptions.SpinBudget"/>, then sleep until woken (the default).</summary>
    Hybrid = 0,

    /// <summary>Busy-poll the ring: the lowest latency, one CPU busy while waiting.</summary>
    Spin,

    /// <summary>Sleep at once; the peer wakes us (an eventfd) only when the ring says we sleep.</summary>
    Block,
}

/// <summary>How a channel carries what is not a descriptor (see <see cref="BufferChannelOptions.Transport"/>).</summary>
public enum ChannelTransport
{
    /// <summary>Every message is a socket record (the default).</summary>
    Socket = 0,

    /// <summary>
    /// Messages go through a shared-memory ring beside the socket; the socket carries only descriptors (the first send
    /// of each buffer), pings and the end of the connection. Both sides must choose it.
    /// </summary>
    Ring,
}

/// <summary>One ring entry as copied out of the shared pages (64 bytes, one cache line).</summary>
[StructLayout(LayoutKind.Sequential, Size = ChannelRing.EntrySize)]
internal struct RingEntry
{
    public uint Type;
    public uint Flags;
    public long BufferId;
    public long Sequence;
    public long Size;
    public ulong UserData;

    /// <summary>The entry's position in the ring's stream; an entry whose stamp is not its position is refused.</summary>
    public long Stamp;
}

/// <summary>
/// The control ring of a <see cref="ChannelTransport.Ring"/> channel: one single-producer, single-consumer ring per
/// direction, each in a sealed memfd its producer created and sent over the socket at connect. Layout in
/// docs/wire-format.md.
/// </summary>
/// <remarks>
/// <para><b>Publication.</b> The producer writes an entry, then the head with release semantics; the consumer reads
/// the head with acquire semantics, then copies the entry once. The consumer's tail goes back the same way. The head,
/// the tail and the consumer's sleeping flag are each on their own 128-byte line (two cache lines: no false sharing
/// with the adjacent-line prefetcher either).</para>
/// <para><b>Waking.</b> A consumer about to sleep sets its flag, issues a full fence and looks at the head once more
/// (Dekker's pattern); a producer publishes, fences and signals the consumer's eventfd only if the flag is set. A busy
/// consumer is never woken by a syscall. A flag the peer forges costs only a spurious signal or, if cleared, a wake
/// the peer misses itself.</para>
/// <para><b>Checks.</b> A head behind our tail or more than the capacity ahead of it, a tail behind the last one seen
/// or ahead of our head, an entry whose stamp is not its position: the ring is corrupt
/// (<see cref="ChannelErrorReason.RingCorrupt"/>). The entry's content is checked by the channel and its ledger.</para>
/// </remarks>
internal sealed unsafe class ChannelRing : IDisposable
{
    internal const int EntrySize = 64;
    internal const int Capacity = 256;
    internal const uint RegionMagic = 0x47524244; // "DBRG"
    internal const uint RegionVersion = 1;
    internal const int HeadOffset = 128;
    internal const int TailOffset = 256;
    internal const int SleepingOffset = 384;
    internal const int EntriesOffset = 1024;
    internal const long RegionSize = 20480; // EntriesOffset + Capacity * EntrySize (17,408) rounded up to pages

    private readonly MappedRegion _outbound; // ours: we write the head, the peer the tail and its sleeping flag
    private readonly MappedRegion _inbound;  // the peer's: it writes the head, we the tail and our sleeping flag
    private readonly SafeFdHandle _ourEvent;
    private readonly SafeFdHandle _peerEvent;
    private long _head;       // next position we publish (outbound)
    private long _seenTail;   // the peer's tail as last read and checked (outbound)
    private long _tail;       // next position we consume (inbound)
    private int _disposed;

    private ChannelRing(MappedRegion outbound, MappedRegion inbound, SafeFdHandle ourEvent, SafeFdHandle peerEvent)
    {
        _outbound = outbound;
        _inbound = inbound;
        _ourEvent = ourEvent;
        _peerEvent = peerEvent;
    }

    /// <summary>Our eventfd, the one we sleep on.</summary>
    internal SafeFdHandle Event => _ourEvent;

    internal bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    /// <summary>Our outbound region's address (for tests that play a peer scribbling on the shared pages).</summary>
    internal nint OutboundAddress => _outbound.Address;

    /// <summary>Signals sent to the peer (it slept when we published).</summary>
    internal long WakesSent { get; private set; }

    /// <summary>Creates our outbound region (sealed memfd) and our eventfd, to be sent to the peer.</summary>
    internal static (SafeFdHandle Region, SafeFdHandle Event) CreateOurs()
    {
        SafeFdHandle region = Interop.Libc.CreateMemfd("dmabuf-channel-ring", RegionSize);
        SafeFdHandle? ev = null;
        try
        {
            Interop.Libc.AddSeals(region, MemfdExporter.Seals);
            ev = Interop.Libc.CreateEventFd();
            nint header = Interop.Libc.MapShared(region, RegionSize, populate: true);
            try
            {
                *(uint*)header = RegionMagic;
                *(uint*)(header + 4) = RegionVersion;
                *(uint*)(header + 8) = Capacity;
                *(uint*)(header + 12) = EntrySize;
            }
            finally
            {
                Interop.Libc.Unmap(header, RegionSize);
            }

            return (region, ev);
        }
        catch
        {
            ev?.Dispose();
            region.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Checks the peer's region and eventfd and maps both regions; takes over all four descriptors (closing them on
    /// failure). The region must be a memfd sealed against shrinking and growing, of at least <see cref="RegionSize"/>
    /// bytes; the event an eventfd.
    /// </summary>
    /// <exception cref="ChannelProtocolException">The peer's descriptors are not what the ring needs.</exception>
    internal static ChannelRing Open(SafeFdHandle ourRegion, SafeFdHandle ourEvent, SafeFdHandle peerRegion, SafeFdHandle peerEvent)
    {
        MappedRegion? outbound = null;
        MappedRegion? inbound = null;
        try
        {
            string link = Interop.Libc.FdLinkTarget(peerRegion);
            if (!link.StartsWith("/memfd:", StringComparison.Ordinal))
            {
                throw new ChannelProtocolException(ChannelErrorReason.NotASharedBuffer, $"The peer's ring region '{link}' is not a memfd.");
            }

            int seals = Interop.Libc.TryGetSeals(peerRegion, out _);
            int needed = Interop.Libc.F_SEAL_SHRINK | Interop.Libc.F_SEAL_GROW;
            if (seals < 0 || (seals & needed) != needed)
            {
                throw new ChannelProtocolException(
                    ChannelErrorReason.NotSealed, $"The peer's ring region is not sealed against shrinking and growing (seals 0x{seals:x}).");
            }

            long size = Interop.Libc.FStat(peerRegion).Size;
            if (size < RegionSize)
            {
                throw new ChannelProtocolException(
                    ChannelErrorReason.BufferTooSmall, $"The peer's ring region has {size} bytes; the ring takes {RegionSize}.");
            }

            if (!Interop.Libc.IsEventFd(peerEvent))
            {
                throw new ChannelProtocolException(
                    ChannelErrorReason.NotASharedBuffer, $"The peer's wake-up descriptor '{Interop.Libc.FdLinkTarget(peerEvent)}' is not an eventfd.");
            }

            outbound = new MappedRegion(Interop.Libc.MapShared(ourRegion, RegionSize, populate: true), RegionSize);
            inbound = new MappedRegion(Interop.Libc.MapShared(peerRegion, RegionSize, populate: false), RegionSize);
            ourRegion.Dispose(); // the mappings keep the memory; the peer holds its copy of the descriptor
            peerRegion.Dispose();
            return new ChannelRing(outbound, inbound, ourEvent, peerEvent);
        }
        catch
        {
            outbound?.Dispose();
            inbound?.Dispose();
            ourRegion.Dispose();
            ourEvent.Dispose();
            peerRegion.Dispose();
            peerEvent.Dispose();
            throw;
        }
    }

    /// <summary>Holds both mappings for the caller's access; false when the ring is closed.</summary>
    internal bool Enter()
    {
        bool a = false;
        bool b = false;
        try
        {
            _outbound.DangerousAddRef(ref a);
            _inbound.DangerousAddRef(ref b);
            return true;
        }
        catch (ObjectDisposedException)
        {
            if (a)
            {
                _outbound.DangerousRelease();
            }

            return false;
        }
    }

    /// <summary>Ends an access begun by a successful <see cref="Enter"/>.</summary>
    internal void Exit()
    {
        _inbound.DangerousRelease();
        _outbound.DangerousRelease();
    }

    // ---- producing (inside the channel's send order; between Enter and Exit) ----

    /// <summary>Whether one entry fits now. Reads and checks the peer's tail when the last one seen leaves no room.</summary>
    /// <exception cref="ChannelProtocolException">The peer's tail is corrupt.</exception>
    internal bool HasRoom()
    {
        if (_head - _seenTail < Capacity)
        {
            return true;
        }

        long tail = Volatile.Read(ref *(long*)(_outbound.Address + TailOffset));
        if (tail < _seenTail || tail > _head)
        {
            throw new ChannelProtocolException(
                ChannelErrorReason.RingCorrupt, $"The peer's tail of our ring is {tail}; it must lie between {_seenTail} and our head {_head}.");
        }

        _seenTail = tail;
        return _head - _seenTail < Capacity;
    }

    /// <summary>Publishes <paramref name="entry"/> (room checked by <see cref="HasRoom"/>) and wakes the peer if it sleeps.</summary>
    internal void Publish(RingEntry entry)
    {
        Debug.Assert(_head - _seenTail < Capacity, "published without room");
        entry.Stamp = _head;
        *(RingEntry*)(_outbound.Address + EntriesOffset + ((_head % Capacity) * EntrySize)) = entry;
        _head++;
        Volatile.Write(ref *(long*)(_outbound.Address + HeadOffset), _head);
        Interlocked.MemoryBarrier(); // the head store before the flag load (the consumer fences the other way)
        if (Volatile.Read(ref *(int*)(_outbound.Address + SleepingOffset)) != 0)
        {
            WakesSent++;
            _ = Interop.Libc.SignalEventFd(_peerEvent); // a peer that broke its eventfd only misses its own wake-ups
        }
    }

    // ---- consuming (inside the channel's receive lock; between Enter and Exit) ----

    /// <summary>Whether the peer published something we have not consumed (the head only, nothing checked).</summary>
    internal bool HasInput() => Volatile.Read(ref *(long*)(_inbound.Address + HeadOffset)) != _tail;

    /// <summary>Copies the next entry out, checks its position, and consumes it; false when there is none.</summary>
    /// <exception cref="ChannelProtocolException">The head or the entry's stamp is corrupt.</exception>
    internal bool TryRead(out RingEntry entry)
    {
        long head = Volatile.Read(ref *(long*)(_inbound.Address + HeadOffset));
        if (head == _tail)
        {
            entry = default;
            return false;
        }

        if (head < _tail || head - _tail > Capacity)
        {
            throw new ChannelProtocolException(
                ChannelErrorReason.RingCorrupt, $"The peer's head is {head}; our tail is {_tail} and the ring holds {Capacity} entries.");
        }

        entry = *(RingEntry*)(_inbound.Address + EntriesOffset + ((_tail % Capacity) * EntrySize)); // copied once
        if (entry.Stamp != _tail)
        {
            throw new ChannelProtocolException(
                ChannelErrorReason.RingCorrupt, $"The entry at position {_tail} is stamped {entry.Stamp}.");
        }

        _tail++;
        Volatile.Write(ref *(long*)(_inbound.Address + TailOffset), _tail);
        return true;
    }

    /// <summary>Says in the peer's region whether we sleep; when <paramref name="sleeping"/>, fences before the caller re-checks.</summary>
    internal void SetSleeping(bool sleeping)
    {
        Volatile.Write(ref *(int*)(_inbound.Address + SleepingOffset), sleeping ? 1 : 0);
        if (sleeping)
        {
            Interlocked.MemoryBarrier(); // the flag store before the head load (the producer fences the other way)
        }
    }

    /// <summary>Resets our eventfd after a wake-up.</summary>
    internal void DrainEvent() => Interop.Libc.DrainEventFd(_ourEvent);

    /// <summary>Unmaps both regions once no access holds them, and closes both eventfds.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _outbound.Dispose();
        _inbound.Dispose();
        _ourEvent.Dispose();
        _peerEvent.Dispose();
    }

    /// <summary>A shared mapping, unmapped when the last reference is released.</summary>
    private sealed class MappedRegion : SafeHandle
    {
        private readonly long _length;

        internal MappedRegion(nint address, long length)
            : base(IntPtr.Zero, ownsHandle: true)
        {
            SetHandle(address);
            _length = length;
        }

        internal nint Address => handle;

        public override bool IsInvalid => handle == IntPtr.Zero;

        protected override bool ReleaseHandle()
        {
            Interop.Libc.Unmap(handle, _length);
            return true;
        }
    }
}

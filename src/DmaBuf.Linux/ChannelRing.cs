// Ownership: a ChannelRing owns two mappings (our outbound region, which we created, and the peer's, which it sent)
// and two descriptors (the end of our wake-up socket pair we wait on, and the end of the peer's it sent, which we
// signal). Both mappings live in one
// MappedRegions handle: every access holds a reference (Enter/Exit), so a close on another thread unmaps only after
// the last access ended. Nothing in the shared pages is trusted: our positions (the next entry we publish, the tail we
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

    /// <summary>Sleep at once; the peer wakes us (a datagram on our wake-up socket) only when the ring says we sleep.</summary>
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

    /// <summary>
    /// Publishes the entry: its position in the ring's stream plus one, written last. Before that the slot holds the
    /// previous lap's stamp (0 on the first lap); any other value is refused.
    /// </summary>
    public long Stamp;
}

/// <summary>
/// The control ring of a <see cref="ChannelTransport.Ring"/> channel: one single-producer, single-consumer ring per
/// direction, each in a sealed memfd its producer created and sent over the socket at connect. Layout in
/// docs/wire-format.md.
/// </summary>
/// <remarks>
/// <para><b>Publication.</b> Each entry is one cache line and carries its own publication: the producer writes the
/// fields, then the stamp (the entry's position plus one) with release semantics; the consumer polls the stamp of the
/// slot at its tail with acquire semantics, then copies the entry once. So a handoff moves one cache line each way, as
/// a bare ping-pong does; there is no head index to fetch besides. The consumer's tail goes back through its own
/// 128-byte line (two cache lines: no false sharing with the adjacent-line prefetcher either), read by the producer only
/// when the ring looks full; the consumer's sleeping flag has a line of its own too.</para>
/// <para><b>Waking.</b> A consumer about to sleep sets its flag, issues a full fence and looks at its slot once more
/// (Dekker's pattern); a producer publishes, fences and wakes the consumer only if the flag is set. A busy consumer is
/// never woken by a syscall. The flag says how the consumer sleeps: on a futex on the flag itself
/// (<see cref="SleepingOnFutex"/>: a blocking receive), woken by <c>FUTEX_WAKE</c>; or polling its wake-up socket
/// (<see cref="SleepingOnSocket"/>: an async receive, which waits through the runtime's poller), woken by a datagram on
/// a Unix socket pair whose waiting end stays with the side that waits. Neither wake can be made to wait: a futex wake
/// never does, and sends and drains take <c>MSG_DONTWAIT</c> per call, so no flag the peer sets on a descriptor it shares
/// with us (an eventfd's <c>O_NONBLOCK</c> lives in the shared file description) matters. A flag the peer forges costs
/// only a spurious wake or, if cleared, a wake the peer misses itself; a peer that keeps waking us for nothing (or
/// rewriting the flag) gets one look a millisecond after a few fruitless wakes, not a spin. A futex keeps no
/// pending wake, so a producer that finds the flag saying futex clears it before it wakes: a consumer past its last
/// look at the ring but not yet asleep then finds the word changed and does not sleep.</para>
/// <para><b>Checks.</b> A slot at our tail stamped neither empty (the previous lap's stamp) nor with its position, an
/// entry rewritten while it was copied, a tail behind the last one seen or ahead of our head: the ring is corrupt
/// (<see cref="ChannelErrorReason.RingCorrupt"/>). The entry's content is checked by the channel and its ledger.</para>
/// </remarks>
internal sealed unsafe class ChannelRing : IDisposable
{
    internal const int EntrySize = 64;
    internal const int Capacity = 256;
    internal const uint RegionMagic = 0x47524244; // "DBRG"
    internal const uint RegionVersion = 4; // 4: the sleeping flag says futex or socket (3: socket only; 2: an eventfd)
    internal const int Awake = 0;
    internal const int SleepingOnSocket = 1; // any value but 0 and 2 is taken as this
    internal const int SleepingOnFutex = 2;
    internal const int TailOffset = 256;
    internal const int SleepingOffset = 384;
    internal const int RoomWaitOffset = 512; // the producer's: non-zero (a number per wait) while it waits for room
    internal const int EntriesOffset = 1024;
    internal const long RegionSize = 20480; // EntriesOffset + Capacity * EntrySize (17,408) rounded up to pages

    private readonly MappedRegions _regions;
    private readonly nint _outbound; // ours: we write the entries, the peer the tail and its sleeping flag
    private readonly nint _inbound;  // the peer's: it writes the entries, we the tail and our sleeping flag
    private readonly SafeFdHandle _ourWake;  // the end we wait on; never passed to the peer
    private readonly SafeFdHandle _peerWake; // the peer's signal end: we send on it
    private long _head;       // next position we publish (outbound)
    private long _seenTail;   // the peer's tail as last read and checked (outbound)
    private long _tail;       // next position we consume (inbound)
    private int _roomWaits;   // our waits for room so far (outbound): each is numbered in the region (wraps)
    private int _roomWaitWoken; // the peer's wait for room we last signalled (inbound)
    private int _disposed;

    private ChannelRing(MappedRegions regions, SafeFdHandle ourWake, SafeFdHandle peerWake)
    {
        _regions = regions;
        _outbound = regions.Outbound;
        _inbound = regions.Inbound;
        _ourWake = ourWake;
        _peerWake = peerWake;
    }

    /// <summary>Our wake-up socket, the one we sleep on (readable when the peer signalled).</summary>
    internal SafeFdHandle Wake => _ourWake;

    internal bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    /// <summary>Our outbound region's address (for tests that play a peer scribbling on the shared pages).</summary>
    internal nint OutboundAddress => _outbound;

    /// <summary>Signals sent to the peer (it slept when we published).</summary>
    internal long WakesSent { get; private set; }

    /// <summary>Signals sent to the peer because it waited for room in its full ring and we consumed an entry.</summary>
    internal long RoomWakesSent { get; private set; }

    /// <summary>
    /// Creates our outbound region (sealed memfd) and our wake-up socket pair: the region and the signal end go to the
    /// peer; we keep the region's mapping and the wait end.
    /// </summary>
    internal static (SafeFdHandle Region, SafeFdHandle Wait, SafeFdHandle Signal) CreateOurs()
    {
        SafeFdHandle region = Interop.Libc.CreateMemfd("dmabuf-channel-ring", RegionSize);
        SafeFdHandle? wait = null, signal = null;
        try
        {
            Interop.Libc.AddSeals(region, MemfdExporter.Seals);
            (wait, signal) = Interop.Libc.CreateWakePair();
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

            return (region, wait, signal);
        }
        catch
        {
            wait?.Dispose();
            signal?.Dispose();
            region.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Checks the peer's region and wake-up descriptor and maps both regions; takes over all four descriptors (closing
    /// them on failure). The region must be a memfd sealed against shrinking and growing, of at least
    /// <see cref="RegionSize"/> bytes, that maps shared and writable; the wake-up descriptor a Unix datagram socket.
    /// </summary>
    /// <exception cref="ChannelProtocolException">The peer's descriptors are not what the ring needs.</exception>
    internal static ChannelRing Open(SafeFdHandle ourRegion, SafeFdHandle ourWake, SafeFdHandle peerRegion, SafeFdHandle peerWake)
    {
        nint outbound = 0;
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

            if (!Interop.Libc.IsUnixDatagramSocket(peerWake))
            {
                throw new ChannelProtocolException(
                    ChannelErrorReason.NotASharedBuffer, $"The peer's wake-up descriptor '{Interop.Libc.FdLinkTarget(peerWake)}' is not a Unix datagram socket.");
            }

            outbound = Interop.Libc.MapShared(ourRegion, RegionSize, populate: true);
            nint inbound;
            try
            {
                inbound = Interop.Libc.MapShared(peerRegion, RegionSize, populate: false);
            }
            catch (LinuxErrorException e)
            {
                // Sealed against writes (EPERM), opened read-only (EACCES): a region the peer chose, refused as such.
                throw new ChannelProtocolException(
                    ChannelErrorReason.NotASharedBuffer, $"The peer's ring region cannot be mapped shared and writable: {e.Message}", e);
            }

            var regions = new MappedRegions(outbound, inbound);
            outbound = 0; // the handle owns it now
            ourRegion.Dispose(); // the mappings keep the memory; the peer holds its copy of the descriptor
            peerRegion.Dispose();
            return new ChannelRing(regions, ourWake, peerWake);
        }
        catch
        {
            if (outbound != 0)
            {
                Interop.Libc.Unmap(outbound, RegionSize);
            }

            ourRegion.Dispose();
            ourWake.Dispose();
            peerRegion.Dispose();
            peerWake.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Two rings joined as the two ends of one connection within this process, with no channel around them (for tests
    /// and benchmarks of the ring alone): what the first publishes the second reads, and back.
    /// </summary>
    internal static (ChannelRing First, ChannelRing Second) CreateConnectedPair()
    {
        (SafeFdHandle firstRegion, SafeFdHandle firstWait, SafeFdHandle firstSignal) = CreateOurs();
        (SafeFdHandle secondRegion, SafeFdHandle secondWait, SafeFdHandle secondSignal) = CreateOurs();
        SafeFdHandle firstRegionCopy = Interop.Libc.Duplicate(firstRegion), secondRegionCopy = Interop.Libc.Duplicate(secondRegion);
        ChannelRing? first = null;
        try
        {
            first = Open(firstRegion, firstWait, secondRegionCopy, secondSignal); // each Open takes its four
        }
        catch
        {
            secondRegion.Dispose();
            secondWait.Dispose();
            firstRegionCopy.Dispose();
            firstSignal.Dispose();
            throw;
        }

        try
        {
            return (first, Open(secondRegion, secondWait, firstRegionCopy, firstSignal));
        }
        catch
        {
            first.Dispose();
            throw;
        }
    }

    /// <summary>Holds both mappings for the caller's access; false when the ring is closed.</summary>
    internal bool Enter()
    {
        bool added = false;
        try
        {
            _regions.DangerousAddRef(ref added);
            return true;
        }
        catch (ObjectDisposedException)
        {
            return false;
        }
    }

    /// <summary>Ends an access begun by a successful <see cref="Enter"/>.</summary>
    internal void Exit() => _regions.DangerousRelease();

    // ---- producing (inside the channel's send order; between Enter and Exit) ----

    /// <summary>Whether one entry fits now. Reads and checks the peer's tail when the last one seen leaves no room.</summary>
    /// <exception cref="ChannelProtocolException">The peer's tail is corrupt.</exception>
    internal bool HasRoom()
    {
        if (_head - _seenTail < Capacity)
        {
            return true;
        }

        long tail = Volatile.Read(ref *(long*)(_outbound + TailOffset));
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
        RingEntry* slot = Slot(_outbound, _head);
        WriteFields(slot, entry); // the fields first, the slot still reads as empty...
        _head++;
        Volatile.Write(ref slot->Stamp, _head); // ...then the stamp, with release semantics: this publishes the entry
        Interlocked.MemoryBarrier(); // the stamp store before the flag load (the consumer fences the other way)
        int sleeping = Volatile.Read(ref *(int*)(_outbound + SleepingOffset));
        if (sleeping != Awake)
        {
            WakesSent++;
            WakePeer(sleeping);
        }
    }

    /// <summary>
    /// Wakes the peer if it sleeps on its futex: after a record on the socket (a ping, a pong), which a futex sleep
    /// does not see. A peer polling its socket sees the record itself.
    /// </summary>
    internal void NudgeFutexSleeper()
    {
        Interlocked.MemoryBarrier(); // the record's send before the flag's load (the consumer fences the other way, then polls the socket)
        if (Volatile.Read(ref *(int*)(_outbound + SleepingOffset)) == SleepingOnFutex)
        {
            WakesSent++;
            WakePeer(SleepingOnFutex);
        }
    }

    private void WakePeer(int sleeping)
    {
        if (sleeping == SleepingOnFutex && Interop.Libc.HasFutex)
        {
            // The word changes first: a consumer between its last look at the ring and its FUTEX_WAIT then finds it
            // changed and does not sleep (a futex keeps no pending wake, as a datagram does).
            int* word = (int*)(_outbound + SleepingOffset);
            _ = Interlocked.CompareExchange(ref *word, Awake, SleepingOnFutex);
            Interop.Libc.FutexWake(word);
        }
        else
        {
            SignalPeer();
        }
    }

    /// <summary>
    /// Writes <paramref name="entry"/>'s fields into <paramref name="slot"/> one by one and never its stamp: the consumer
    /// polls the slot while we write it, and it must read as empty (the previous lap's stamp) until the stamp's store
    /// that publishes it. A whole-struct assignment leaves it to the JIT what passes through the stamp's bytes on the
    /// way: with <c>slot = entry</c> in optimized code, a consumer read the stamp 0 from a slot being written (neither
    /// empty nor published) and closed a sound connection as a corrupt ring.
    /// </summary>
    internal static void WriteFields(RingEntry* slot, in RingEntry entry)
    {
        slot->Type = entry.Type;
        slot->Flags = entry.Flags;
        slot->BufferId = entry.BufferId;
        slot->Sequence = entry.Sequence;
        slot->Size = entry.Size;
        slot->UserData = entry.UserData;
    }

    /// <summary>The stamp a slot holds before the entry at <paramref name="position"/> is published: the previous lap's, or 0 on the first.</summary>
    private static long EmptyStamp(long position) => position >= Capacity ? position + 1 - Capacity : 0;

    internal static RingEntry* Slot(nint region, long position) =>
        (RingEntry*)(region + EntriesOffset + ((position % Capacity) * EntrySize));

    // ---- consuming (inside the channel's receive lock; between Enter and Exit) ----

    /// <summary>Whether the slot at our tail no longer reads as empty (published, or corrupt: <see cref="TryRead"/> tells).</summary>
    internal bool HasInput() => Volatile.Read(ref Slot(_inbound, _tail)->Stamp) != EmptyStamp(_tail);

    /// <summary>Copies the next entry out, checks its stamp, and consumes it; false when there is none.</summary>
    /// <exception cref="ChannelProtocolException">The slot's stamp is neither empty nor the entry's.</exception>
    internal bool TryRead(out RingEntry entry)
    {
        RingEntry* slot = Slot(_inbound, _tail);
        long stamp = Volatile.Read(ref slot->Stamp); // acquire: the fields are read after it
        if (stamp == EmptyStamp(_tail))
        {
            entry = default;
            return false;
        }

        if (stamp != _tail + 1)
        {
            throw new ChannelProtocolException(
                ChannelErrorReason.RingCorrupt, $"The entry at position {_tail} is stamped {stamp}; it must read {EmptyStamp(_tail)} (empty) or {_tail + 1} (published).");
        }

        entry = *slot; // copied once; what we act on is this copy
        if (entry.Stamp != stamp)
        {
            throw new ChannelProtocolException(
                ChannelErrorReason.RingCorrupt, $"The entry at position {_tail} was rewritten while it was read (stamp {stamp}, then {entry.Stamp}).");
        }

        _tail++;
        Volatile.Write(ref *(long*)(_inbound + TailOffset), _tail);
        int roomWait = Volatile.Read(ref *(int*)(_inbound + RoomWaitOffset));
        if (roomWait != 0 && roomWait != _roomWaitWoken)
        {
            // The peer waits for room and we just made some: wake it, once per wait. No fence between the tail's store
            // and this load, so in a rare interleaving the peer misses this and finds the room at its next look (its
            // sleep is bounded: see BeginRoomWait).
            _roomWaitWoken = roomWait;
            RoomWakesSent++;
            SignalPeer();
        }

        return true;
    }

    /// <summary>
    /// Says in the peer's region whether we sleep (polling our wake-up socket); when <paramref name="sleeping"/>, fences
    /// before the caller re-checks.
    /// </summary>
    internal void SetSleeping(bool sleeping) => SetSleeping(sleeping ? SleepingOnSocket : Awake);

    private void SetSleeping(int how)
    {
        Volatile.Write(ref *(int*)(_inbound + SleepingOffset), how);
        if (how != Awake)
        {
            Interlocked.MemoryBarrier(); // the flag store before the stamp load (the producer fences the other way)
        }
    }

    /// <summary>
    /// Says in the peer's region that we are about to sleep on the futex of our sleeping flag, with a full fence: the
    /// caller then looks at the ring and the socket once more before <see cref="SleepOnFutex"/>, and clears the flag
    /// after (<see cref="SetSleeping(bool)"/>).
    /// </summary>
    internal void BeginFutexSleep() => SetSleeping(SleepingOnFutex);

    /// <summary>
    /// Sleeps on the futex of our sleeping flag (set by <see cref="BeginFutexSleep"/>) for at most
    /// <paramref name="milliseconds"/>. <see cref="FutexOutcome.Changed"/>: the flag had changed before the sleep began
    /// (the producer's wake clears it first, or a peer rewrote it).
    /// </summary>
    internal FutexOutcome SleepOnFutex(int milliseconds) =>
        Interop.Libc.FutexWait((int*)(_inbound + SleepingOffset), SleepingOnFutex, milliseconds);

    /// <summary>
    /// Says in our region that we wait for room (a new number per wait), with a full fence before the caller looks at
    /// the tail once more; the peer signals our wake-up socket when it consumes while the number is new to it. The caller
    /// sleeps at most <see cref="RoomWaitSliceMs"/> at a time, so a signal the peer misses costs at most that.
    /// </summary>
    internal void BeginRoomWait()
    {
        int number = Interlocked.Increment(ref _roomWaits); // async senders wait outside the send order
        if (number == 0)
        {
            number = Interlocked.Increment(ref _roomWaits); // 0 means no wait
        }

        Volatile.Write(ref *(int*)(_outbound + RoomWaitOffset), number);
        Interlocked.MemoryBarrier(); // the number's store before the tail's load (Dekker's pattern, as for sleeping)
    }

    /// <summary>Ends a wait begun by <see cref="BeginRoomWait"/>.</summary>
    internal void EndRoomWait() => Volatile.Write(ref *(int*)(_outbound + RoomWaitOffset), 0);

    /// <summary>The longest a producer sleeps at once waiting for room before it looks at the tail again.</summary>
    internal const int RoomWaitSliceMs = 1;

    /// <summary>Reads the wake-ups pending on our socket after a wake-up; nothing once the ring is closed.</summary>
    internal void DrainWake()
    {
        try
        {
            Interop.Libc.DrainWake(_ourWake);
        }
        catch (ObjectDisposedException)
        {
            // Closed on another thread while our access holds the pages: the caller's next look sees the close.
        }
    }

    /// <summary>
    /// Wakes the peer, best effort: a peer that broke its socket only misses its own wake-ups, and once the ring is
    /// closed (on another thread, after what the caller published) there is nobody to wake. Never throws, so what was
    /// published stays reported as published.
    /// </summary>
    private void SignalPeer()
    {
        try
        {
            _ = Interop.Libc.SignalWake(_peerWake);
        }
        catch (ObjectDisposedException)
        {
            // closed meanwhile
        }
    }

    /// <summary>Unmaps both regions once no access holds them, and closes both wake-up descriptors.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        if (Interop.Libc.HasFutex)
        {
            NudgeFutexSleeper(); // the peer, if asleep on its futex, sees the socket's hang-up now, not a slice later

            // Our own receive, if it sleeps there or is about to: the flag no longer says so (a sleep about to begin
            // finds it changed), and a sleeper is woken. Either way it then sees the close.
            Volatile.Write(ref *(int*)(_inbound + SleepingOffset), Awake);
            Interop.Libc.FutexWake((int*)(_inbound + SleepingOffset));
        }

        _regions.Dispose();
        _ourWake.Dispose();
        _peerWake.Dispose();
    }

    /// <summary>Both shared mappings of the ring, unmapped when the last reference is released.</summary>
    private sealed class MappedRegions : SafeHandle
    {
        internal MappedRegions(nint outbound, nint inbound)
            : base(IntPtr.Zero, ownsHandle: true)
        {
            SetHandle(outbound);
            Inbound = inbound;
        }

        internal nint Outbound => handle;

        internal nint Inbound { get; }

        public override bool IsInvalid => handle == IntPtr.Zero;

        protected override bool ReleaseHandle()
        {
            Interop.Libc.Unmap(handle, RegionSize);
            Interop.Libc.Unmap(Inbound, RegionSize);
            return true;
        }
    }
}

// Ownership: a mapping returned by Map is owned by the caller until it passes it to Unmap, exactly once. The domain owns
// the IOVA range and the reach it added to the physical pages; it gives both back only when no device can reach the
// pages through this domain any more: after the invalidation (strict) or after the flush (lazy). Design rule 8.
using System.Diagnostics;

namespace DmaBuf.Simulation;

/// <summary>
/// An IOMMU domain: one device address space with its own 4-level page table, IOVA allocator and ASID, on an
/// <see cref="IommuUnit"/>. Devices of one IOMMU group share a domain.
/// </summary>
/// <remarks>
/// <para>
/// <see cref="Map"/> coalesces the physical runs, allocates one IOVA range for all of them, writes leaf entries (a 2 MiB
/// block wherever IOVA and physical address are both 2 MiB aligned and a whole block remains, else 4 KiB pages) and
/// returns a one-run table. <see cref="Unmap"/> clears the entries; in strict mode it then invalidates the IOTLB
/// (per-leaf commands in batches ending in a sync, one range command, or one whole-domain invalidation past the
/// profile's threshold) and releases the IOVA and the pages' reach; in lazy mode it queues the range, and a flush —
/// when the queue is full, when the timer set at the oldest entry fires, or on <see cref="FlushNow"/> — invalidates the
/// whole domain and only then releases them. Until that flush a stale IOTLB entry can still translate, as on real
/// hardware.
/// </para>
/// <para>
/// Every operation adds its simulated cost to <see cref="SimStats.MappingNs"/> and charges it to the clock with
/// <see cref="SimClock.Charge"/>, which runs no timer: callers may hold a buffer lock. The flush timer therefore runs
/// at the simulation's next <see cref="SimClock.Advance"/>. Locks: the domain's lock
/// (<see cref="LockLevel.AddressSpace"/>), then the unit's (<see cref="LockLevel.Iommu"/>) for the IOTLB.
/// </para>
/// </remarks>
public sealed class IommuDomain : ISimAddressSpace
{
    private const ulong PageMask = PhysicalMemory.PageSize - 1;

    private readonly IommuUnit _unit;
    private readonly PhysicalMemory _memory;
    private readonly SimClock _clock;
    private readonly SimStats _stats;
    private readonly Iotlb _iotlb;
    private readonly OrderedLock _lock;
    private readonly IoPageTable _table = new();
    private readonly IovaAllocator _iova;
    private readonly Dictionary<ulong, Mapping> _live = [];
    private readonly List<Mapping> _flushQueue = [];
    private readonly List<DmaFault> _faults = [];
    private readonly Action _onFlushTimer;
    private readonly bool _lazy;
    private readonly bool _pagesBackAtUnmap; // linux-lazy: the data pages' reach ends at unmap, not at the flush
    private readonly List<long> _windowsNs = [];

    // Profile values, read once: the profile is immutable and these sit on the hot path.
    private readonly long _mapCallNs;
    private readonly long _pteWriteNs;
    private readonly long _unmapCallNs;
    private readonly long _pteClearNs;
    private readonly long _tlbiCommandNs;
    private readonly long _tlbiBatchSize;
    private readonly long _cmdSyncNs;
    private readonly bool _rangeInvalidation;
    private readonly long _rangeTlbiNs;
    private readonly long _maxTlbiOps;
    private readonly long _fullInvalidateNs;
    private readonly long _iovaAllocNs;
    private readonly long _iovaCachedAllocNs;
    private readonly long _iovaFreeNs;
    private readonly long _flushQueueEntries;
    private readonly long _flushTimeoutNs;
    private readonly long _flushNs;
    private readonly long _pageWalkNs;

    private SimTimer? _flushTimer;
    private long _entriesHeld; // leaf entries of live and queued mappings, for the invariant check

    internal IommuDomain(IommuUnit unit, string name, int asid, int addressBits)
    {
        _unit = unit;
        _memory = unit.Memory;
        _clock = unit.Clock;
        _stats = unit.Stats;
        _iotlb = unit.Iotlb;
        _lazy = unit.Mode is IommuMode.Lazy or IommuMode.LinuxLazy;
        _pagesBackAtUnmap = unit.Mode == IommuMode.LinuxLazy;
        Name = name;
        Asid = asid;
        Id = AddressSpaceIds.Next();
        _lock = new OrderedLock(LockLevel.AddressSpace, $"IOMMU domain {name}");
        _iova = new IovaAllocator(1, 1UL << (addressBits - PhysicalMemory.PageShift)); // IOVA 0 is never handed out
        _onFlushTimer = OnFlushTimer;

        CostProfile p = unit.Profile;
        _mapCallNs = p.MapCallNs;
        _pteWriteNs = p.PteWriteNs;
        _unmapCallNs = p.UnmapCallNs;
        _pteClearNs = p.PteClearNs;
        _tlbiCommandNs = p.TlbiCommandNs;
        _tlbiBatchSize = p.TlbiBatchSize;
        _cmdSyncNs = p.CmdSyncNs;
        _rangeInvalidation = p.RangeInvalidation;
        _rangeTlbiNs = p.RangeTlbiNs;
        _maxTlbiOps = p.MaxTlbiOpsBeforeFullInvalidate;
        _fullInvalidateNs = p.FullInvalidateNs;
        _iovaAllocNs = p.IovaAllocNs;
        _iovaCachedAllocNs = p.IovaCachedAllocNs;
        _iovaFreeNs = p.IovaFreeNs;
        _flushQueueEntries = p.FlushQueueEntries;
        _flushTimeoutNs = p.FlushTimeoutNs;
        _flushNs = p.FlushNs;
        _pageWalkNs = p.PageWalkNs;
    }

    /// <inheritdoc/>
    public long Id { get; }

    /// <inheritdoc/>
    public string Name { get; }

    /// <summary>The unit the domain lives on.</summary>
    public IommuUnit Unit => _unit;

    /// <summary>The address-space id that tags this domain's IOTLB entries.</summary>
    public int Asid { get; }

    /// <summary>The unit's invalidation mode.</summary>
    public IommuMode Mode => _unit.Mode;

    /// <summary>Mappings made and not yet unmapped.</summary>
    public int LiveMappings
    {
        get
        {
            using OrderedLock.Scope scope = _lock.Enter();
            return _live.Count;
        }
    }

    /// <summary>Unmapped ranges waiting in the lazy flush queue (their IOVA and pages are still held).</summary>
    public long PendingFlushEntries
    {
        get
        {
            using OrderedLock.Scope scope = _lock.Enter();
            return _flushQueue.Count;
        }
    }

    /// <summary>Valid leaf entries in the page table now.</summary>
    public long PageTableEntries
    {
        get
        {
            using OrderedLock.Scope scope = _lock.Enter();
            return _table.LeafEntries;
        }
    }

    /// <inheritdoc/>
    public IReadOnlyList<DmaFault> Faults => _faults;

    /// <summary>
    /// Fault injection: asked under the domain lock before each IOVA allocation (<see cref="SimFaultSite.IovaAllocation"/>)
    /// and before each page-table write of a map (<see cref="SimFaultSite.PageTableWrite"/>); when it returns true that
    /// step fails and <see cref="Map"/> throws <see cref="DmaMappingException"/> after undoing every earlier step. Null
    /// (the default) never fails.
    /// </summary>
    public Func<SimFaultSite, bool>? FaultInjection { get; set; }

    /// <summary>IOVA ranges held now: by live mappings and by unmapped ranges waiting for the lazy flush.</summary>
    public int IovaRangesHeld
    {
        get
        {
            using OrderedLock.Scope scope = _lock.Enter();
            return _iova.RangesInTree - _iova.CachedRanges;
        }
    }

    /// <summary>
    /// Called after each unmap with the range's device address and its length in pages (the simulation's misbehaving
    /// device uses it to keep accessing the old addresses). Runs outside the domain lock.
    /// </summary>
    internal Action<ulong, ulong>? Unmapped { get; set; }

    /// <summary>For each unmapped range whose invalidation has happened, the simulated time from the unmap to it.</summary>
    internal IReadOnlyList<long> UnmapWindowsNs => _windowsNs;

    internal IoPageTable PageTable => _table;

    internal IovaAllocator IovaAllocator => _iova;

    /// <inheritdoc/>
    /// <remarks>
    /// Charges <c>MapCallNs</c> + the IOVA allocation (cached or not) + <c>PteWriteNs</c> per leaf entry. All or nothing
    /// (design rule 11): a map that fails after allocating its IOVA or writing some entries clears those entries, drops
    /// the reach it added and frees the IOVA before it throws; no device can have used the entries meanwhile, because
    /// DMA translation takes the domain lock the map holds.
    /// </remarks>
    /// <exception cref="DmaMappingException">
    /// A run is not page aligned or not memory, the IOVA space is full, or a page-table write failed.
    /// </exception>
    public ScatterTable Map(ScatterTable physical, DmaDirection direction)
    {
        ArgumentNullException.ThrowIfNull(physical);
        long cost = 0;
        try
        {
            using (_lock.Enter())
            {
                try
                {
                    return MapLocked(physical, direction, ref cost);
                }
                finally
                {
                    AssertInvariants();
                }
            }
        }
        finally
        {
            _clock.Charge(cost); // a failed map still spent the time of what it did and undid
        }
    }

    /// <inheritdoc/>
    /// <remarks>
    /// Strict: charges <c>UnmapCallNs</c> + <c>PteClearNs</c> per leaf + the invalidation + <c>IovaFreeNs</c>. Lazy:
    /// charges <c>UnmapCallNs</c> + <c>PteClearNs</c> per leaf, and the flush (<c>FlushNs</c> + <c>IovaFreeNs</c> per
    /// queued range) when it happens.
    /// </remarks>
    /// <exception cref="ArgumentException">
    /// <paramref name="mapped"/> is not a live mapping of this domain, or <paramref name="direction"/> differs from the
    /// direction it was mapped with.
    /// </exception>
    public void Unmap(ScatterTable mapped, DmaDirection direction)
    {
        ArgumentNullException.ThrowIfNull(mapped);
        long cost;
        using (_lock.Enter())
        {
            cost = UnmapLocked(mapped, direction);
            AssertInvariants();
        }

        _clock.Charge(cost);
        Unmapped?.Invoke(mapped.Segments[0].Address, (mapped.TotalLength + PageMask) >> PhysicalMemory.PageShift);
    }

    /// <summary>Flushes the lazy flush queue now: one whole-domain invalidation, then the queued IOVAs and pages are released.</summary>
    /// <remarks>Does nothing when the queue is empty (always, in strict mode).</remarks>
    public void FlushNow()
    {
        long cost;
        using (_lock.Enter())
        {
            cost = FlushLocked();
            _stats.MappingNs += cost;
            AssertInvariants();
        }

        _clock.Charge(cost);
    }

    /// <summary>
    /// Translates a device address as the IOMMU does for a DMA: the IOTLB first (a hit or a miss is counted), else a
    /// page walk (counted, its time added to <see cref="SimStats.TranslationNs"/>) that fills the IOTLB. Records no fault.
    /// </summary>
    /// <returns>False when the address is not mapped or the mapping does not allow the access.</returns>
    public bool TryTranslate(ulong iova, bool write, out ulong physAddr)
    {
        using (_lock.Enter())
        using (_unit.Lock.Enter())
        {
            return Translate(iova, write, out physAddr) == TranslateResult.Ok;
        }
    }

    /// <inheritdoc/>
    public bool DmaRead(ulong deviceAddress, Span<byte> dest)
    {
        using (_lock.Enter())
        using (_unit.Lock.Enter())
        {
            while (!dest.IsEmpty)
            {
                int n = (int)Math.Min((ulong)dest.Length, PhysicalMemory.PageSize - (deviceAddress & PageMask));
                TranslateResult r = Translate(deviceAddress, write: false, out ulong pa);
                if (r != TranslateResult.Ok)
                {
                    return Fault(deviceAddress, write: false, r);
                }

                _memory.Read(pa, dest[..n]);
                dest = dest[n..];
                deviceAddress += (ulong)n;
            }
        }

        return true;
    }

    /// <inheritdoc/>
    public bool DmaWrite(ulong deviceAddress, ReadOnlySpan<byte> src)
    {
        using (_lock.Enter())
        using (_unit.Lock.Enter())
        {
            while (!src.IsEmpty)
            {
                int n = (int)Math.Min((ulong)src.Length, PhysicalMemory.PageSize - (deviceAddress & PageMask));
                TranslateResult r = Translate(deviceAddress, write: true, out ulong pa);
                if (r != TranslateResult.Ok)
                {
                    return Fault(deviceAddress, write: true, r);
                }

                _memory.Write(pa, src[..n]);
                src = src[n..];
                deviceAddress += (ulong)n;
            }
        }

        return true;
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Name} (ASID {Asid} on {_unit.Name})";

    private ScatterTable MapLocked(ScatterTable physical, DmaDirection direction, ref long cost)
    {
        ScatterTable runs = physical.Coalesced();
        ReadOnlySpan<ScatterSegment> segments = runs.Segments;
        ulong pages = 0;
        for (int i = 0; i < segments.Length; i++)
        {
            ScatterSegment s = segments[i];
            if ((s.Address & PageMask) != 0 || (i != segments.Length - 1 && (s.Length & PageMask) != 0))
            {
                throw new DmaMappingException($"{Name}: run 0x{s.Address:x} + {s.Length} bytes is not page aligned.");
            }

            if (!_memory.Contains(s.Address, (long)s.Length))
            {
                throw new DmaMappingException($"{Name}: run 0x{s.Address:x} + {s.Length} bytes is not memory.");
            }

            pages += (s.Length + PageMask) >> PhysicalMemory.PageShift;
        }

        Func<SimFaultSite, bool>? faults = FaultInjection;
        if (faults?.Invoke(SimFaultSite.IovaAllocation) == true || !_iova.TryAllocate(pages, out ulong iovaPfn, out bool cacheHit))
        {
            throw new DmaMappingException($"{Name}: no IOVA space left for {pages} pages.");
        }

        _stats.IovaAllocs++;
        if (cacheHit)
        {
            _stats.IovaCacheHits++;
        }

        ulong iova = iovaPfn << PhysicalMemory.PageShift;
        IommuPermissions permissions = direction == DmaDirection.ToDevice ? IommuPermissions.Read : IommuPermissions.ReadWrite;
        long entries = 0;
        ulong at = iova;
        int reached = 0; // segments whose entries are written and whose pages carry our reach
        cost = _mapCallNs + (cacheHit ? _iovaCachedAllocNs : _iovaAllocNs);
        try
        {
            for (; reached < segments.Length; reached++)
            {
                ulong address = segments[reached].Address;
                long n = (long)((segments[reached].Length + PageMask) >> PhysicalMemory.PageShift);
                long written = _table.Map(at, address, n, permissions, faults); // all or nothing for its own run
                entries += written;
                _stats.PagesMapped += written;
                _memory.AddReach(address >> PhysicalMemory.PageShift, n);
                at += (ulong)n << PhysicalMemory.PageShift;
            }
        }
        catch
        {
            cost += entries * _pteWriteNs;
            cost += UnwindFailedMap(iova, iovaPfn, pages, segments[..reached], at);
            _stats.MappingNs += cost;
            throw;
        }

        var result = ScatterTable.Single(iova, physical.TotalLength);
        _live.Add(iova, new Mapping(iova, pages, physical.TotalLength, runs, entries, direction));
        _entriesHeld += entries;

        cost += entries * _pteWriteNs;
        _stats.MapCalls++;
        _stats.MappingNs += cost;
        return result;
    }

    // Undoes a map that failed part way: clears the entries of the segments already written (the failing segment's own
    // entries were cleared by the page table), drops their reach and frees the IOVA. Returns the cost of the undo.
    private long UnwindFailedMap(ulong iova, ulong iovaPfn, ulong pages, ReadOnlySpan<ScatterSegment> reached, ulong end)
    {
        long cleared = end > iova ? _table.Unmap(iova, (long)((end - iova) >> PhysicalMemory.PageShift)) : 0;
        _stats.PagesUnmapped += cleared;
        foreach (ScatterSegment s in reached)
        {
            _memory.RemoveReach(s.Address >> PhysicalMemory.PageShift, (long)((s.Length + PageMask) >> PhysicalMemory.PageShift));
        }

        _iova.Free(iovaPfn, pages);
        _stats.IovaFrees++;
        return (cleared * _pteClearNs) + _iovaFreeNs;
    }

    private long UnmapLocked(ScatterTable mapped, DmaDirection direction)
    {
        ulong iova = mapped.Segments[0].Address;
        if (mapped.Count != 1 || !_live.TryGetValue(iova, out Mapping? m) || m.Length != mapped.TotalLength)
        {
            throw new ArgumentException(
                $"{Name}: the table at 0x{iova:x} ({mapped}) is not a live mapping of this domain.", nameof(mapped));
        }

        if (m.Direction != direction)
        {
            throw new ArgumentException(
                $"{Name}: the mapping at 0x{iova:x} was mapped {m.Direction} and is unmapped {direction}.", nameof(direction));
        }

        _live.Remove(iova);
        long leaves = _table.Unmap(m.Iova, (long)m.Pages);
        Debug.Assert(leaves == m.Entries, "cleared a different number of leaves than were written");
        long cost = _unmapCallNs + (leaves * _pteClearNs);
        _stats.UnmapCalls++;
        _stats.PagesUnmapped += leaves;

        if (!_lazy)
        {
            cost += Invalidate(m, leaves);
            _windowsNs.Add(0);
            Release(m);
            cost += _iovaFreeNs;
        }
        else
        {
            m.UnmappedAtNs = _clock.NowNs;
            if (_pagesBackAtUnmap)
            {
                // As Linux's flush queue: the IOVA (and the stale IOTLB entries) wait for the flush, the data pages
                // do not. A device with a stale entry can reach them after they are freed, until the flush.
                ReleaseReach(m);
            }

            _flushQueue.Add(m);
            if (_flushQueue.Count >= _flushQueueEntries)
            {
                cost += FlushLocked();
            }
            else
            {
                _flushTimer ??= _clock.Schedule(_clock.NowNs + _flushTimeoutNs, _onFlushTimer);
            }
        }

        _stats.MappingNs += cost;
        return cost;
    }

    // Strict-mode invalidation of one unmapped range; returns its cost.
    private long Invalidate(Mapping m, long leaves)
    {
        long commands;
        long cost;
        using (_unit.Lock.Enter())
        {
            if (_rangeInvalidation)
            {
                commands = 1;
                cost = _rangeTlbiNs + _cmdSyncNs;
                _iotlb.InvalidateRange(Asid, m.Iova, m.Pages << PhysicalMemory.PageShift);
            }
            else if (_maxTlbiOps != 0 && leaves >= _maxTlbiOps)
            {
                commands = 1;
                cost = _fullInvalidateNs;
                _iotlb.InvalidateAsid(Asid);
            }
            else
            {
                commands = leaves;
                long batches = (leaves + _tlbiBatchSize - 1) / _tlbiBatchSize;
                cost = (leaves * _tlbiCommandNs) + (batches * _cmdSyncNs);
                _iotlb.InvalidateRange(Asid, m.Iova, m.Pages << PhysicalMemory.PageShift);
            }
        }

        _stats.IotlbInvalidations += commands;
        return cost;
    }

    // Lazy-mode flush; returns its cost, which the caller adds to MappingNs.
    private long FlushLocked()
    {
        if (_flushTimer is not null)
        {
            _flushTimer.Cancel();
            _flushTimer = null;
        }

        if (_flushQueue.Count == 0)
        {
            return 0;
        }

        using (_unit.Lock.Enter())
        {
            _iotlb.InvalidateAsid(Asid);
        }

        _stats.IotlbInvalidations++;
        _stats.LazyFlushes++;
        long cost = _flushNs;
        foreach (Mapping m in _flushQueue)
        {
            _windowsNs.Add(_clock.NowNs - m.UnmappedAtNs);
            Release(m);
            cost += _iovaFreeNs;
        }

        _flushQueue.Clear();
        return cost;
    }

    private void OnFlushTimer()
    {
        long cost;
        using (_lock.Enter())
        {
            _flushTimer = null; // this timer has fired
            cost = FlushLocked();
            _stats.MappingNs += cost;
            AssertInvariants();
        }

        _clock.Charge(cost);
    }

    // No device can reach the range through this domain any more: give back the pages' reach and the IOVA.
    private void Release(Mapping m)
    {
        ReleaseReach(m);
        _iova.Free(m.Iova >> PhysicalMemory.PageShift, m.Pages);
        _stats.IovaFrees++;
        _entriesHeld -= m.Entries;
    }

    private void ReleaseReach(Mapping m)
    {
        if (m.ReachReleased)
        {
            return;
        }

        m.ReachReleased = true;
        foreach (ScatterSegment s in m.Physical.Segments)
        {
            _memory.RemoveReach(s.Address >> PhysicalMemory.PageShift, (long)((s.Length + PageMask) >> PhysicalMemory.PageShift));
        }
    }

    private TranslateResult Translate(ulong iova, bool write, out ulong physAddr)
    {
        if (iova >> IoPageTable.IovaBits != 0)
        {
            physAddr = 0;
            return TranslateResult.OutsideSpace;
        }

        if (_iotlb.Lookup(Asid, iova, out physAddr, out IommuPermissions permissions))
        {
            _stats.IotlbHits++;
        }
        else
        {
            _stats.IotlbMisses++;
            _stats.PageWalks++;
            _stats.TranslationNs += _pageWalkNs;
            if (!_table.Walk(iova, out physAddr, out ulong leafBase, out bool block, out permissions))
            {
                return TranslateResult.Unmapped;
            }

            _iotlb.Insert(Asid, iova, leafBase, block, permissions);
        }

        IommuPermissions needed = write ? IommuPermissions.Write : IommuPermissions.Read;
        return (permissions & needed) != 0 ? TranslateResult.Ok : write ? TranslateResult.WriteDenied : TranslateResult.ReadDenied;
    }

    private bool Fault(ulong deviceAddress, bool write, TranslateResult result)
    {
        _stats.DmaFaults++;
        if (_faults.Count < AddressSpaceIds.MaxRecordedFaults)
        {
            string reason = result switch
            {
                TranslateResult.Unmapped => "unmapped",
                TranslateResult.WriteDenied => "write to a read-only mapping",
                TranslateResult.ReadDenied => "read from a write-only mapping",
                _ => "outside the IOVA space",
            };
            _faults.Add(new DmaFault(Name, deviceAddress, write, reason));
        }

        return false;
    }

    [Conditional("DEBUG")]
    private void AssertInvariants()
    {
        Debug.Assert(_lock.IsHeldByCurrentThread, "invariants are checked under the domain lock");
        Debug.Assert(_table.LeafEntries + EntriesQueued() == _entriesHeld, "page-table leaves disagree with the live and queued mappings");
        Debug.Assert(_lazy || _flushQueue.Count == 0, "strict domain with a flush queue");
        Debug.Assert(_flushQueue.Count == 0 || _flushTimer is not null || _flushQueue.Count >= _flushQueueEntries, "queued entries without a flush timer");
    }

    private long EntriesQueued()
    {
        long n = 0;
        foreach (Mapping m in _flushQueue)
        {
            n += m.Entries;
        }

        return n;
    }

    private enum TranslateResult
    {
        Ok,
        Unmapped,
        WriteDenied,
        ReadDenied,
        OutsideSpace,
    }

    private sealed record Mapping(ulong Iova, ulong Pages, ulong Length, ScatterTable Physical, long Entries, DmaDirection Direction)
    {
        public long UnmappedAtNs { get; set; }

        public bool ReachReleased { get; set; }
    }
}

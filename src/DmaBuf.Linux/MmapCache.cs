// Ownership: the cache owns one mmap per buffer identity while the mapping is cached. Each CpuMapping it hands out
// holds one more count on the region; the region is unmapped when the last count goes: the cache's (eviction or the
// buffer's release) or a lease's (CpuMapping.Dispose), whichever is later. The cache never holds a DmaBuffer
// reference: it belongs to the buffers and dies with each of them (rule 3).
using System.Diagnostics;

namespace DmaBuf.Linux;

/// <summary>Counters and state of an <see cref="MmapCache"/> at one moment.</summary>
/// <param name="Hits">Requests served by a cached mapping.</param>
/// <param name="Misses">Requests that needed a new mmap.</param>
/// <param name="Evictions">Mappings pushed out by the byte budget.</param>
/// <param name="MapCalls">mmap calls made.</param>
/// <param name="UnmapCalls">munmap calls made.</param>
/// <param name="BytesMapped">Bytes mapped by all mmap calls so far (page-rounded).</param>
/// <param name="CachedMappings">Mappings in the cache now.</param>
/// <param name="CachedBytes">Bytes of the mappings in the cache now (counted against the budget).</param>
/// <param name="LiveMappings">Mappings that exist now: cached ones plus evicted ones still in use.</param>
/// <param name="LiveBytes">Bytes of <paramref name="LiveMappings"/>.</param>
public readonly record struct MmapCacheStatistics(
    long Hits, long Misses, long Evictions, long MapCalls, long UnmapCalls, long BytesMapped,
    int CachedMappings, long CachedBytes, int LiveMappings, long LiveBytes)
{
    /// <summary>
    /// The cache evicts but never hits: it is smaller than the working set (a pool larger than the budget), so every
    /// use maps afresh. Worth a warning (xbmc#28872).
    /// </summary>
    public bool IsThrashing => Hits == 0 && Evictions > 0;
}

/// <summary>
/// The process's CPU mappings of Linux buffers: one <c>mmap</c> per buffer, keyed by the buffer's
/// <see cref="FileIdentity"/> (<c>st_dev</c>, <c>st_ino</c>; never a descriptor number, rule 6), within a byte budget
/// with least-recently-used eviction.
/// </summary>
/// <remarks>
/// <para><b>Lifetime.</b> A mapping leaves the cache when its buffer is released or when the budget evicts it. Either
/// way it is unmapped only when the last <see cref="CpuMapping"/> using it is disposed, so an eviction never pulls memory
/// from under a reader.</para>
/// <para><b>Locking.</b> One lock at <see cref="LockLevel.AddressSpace"/> (callers may hold a buffer lock); mmap and
/// munmap run outside it.</para>
/// </remarks>
public sealed class MmapCache
{
    /// <summary>The budget of <see cref="Shared"/>: 1 GiB.</summary>
    public const long DefaultBudgetBytes = 1L << 30;

    private readonly OrderedLock _lock = new(LockLevel.AddressSpace, "mmap cache");
    private readonly Dictionary<FileIdentity, Region> _cached = [];
    private readonly LinkedList<Region> _lru = []; // most recently used first
    private long _hits;
    private long _misses;
    private long _evictions;
    private long _mapCalls;
    private long _unmapCalls;
    private long _bytesMapped;
    private long _cachedBytes;
    private int _liveMappings;
    private long _liveBytes;

    /// <summary>Creates a cache that keeps at most <paramref name="budgetBytes"/> of mappings.</summary>
    /// <param name="budgetBytes">Byte budget; 0 keeps nothing (every use maps afresh).</param>
    public MmapCache(long budgetBytes = DefaultBudgetBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(budgetBytes);
        BudgetBytes = budgetBytes;
    }

    /// <summary>The process-wide cache that exporters and import caches use unless given another.</summary>
    public static MmapCache Shared { get; } = new();

    /// <summary>The byte budget.</summary>
    public long BudgetBytes { get; }

    /// <summary>A snapshot of the counters.</summary>
    public MmapCacheStatistics Statistics
    {
        get
        {
            using OrderedLock.Scope scope = _lock.Enter();
            return new MmapCacheStatistics(
                _hits, _misses, _evictions, _mapCalls, _unmapCalls, _bytesMapped, _cached.Count, _cachedBytes, _liveMappings, _liveBytes);
        }
    }

    /// <summary>Whether a mapping of <paramref name="identity"/> is cached now.</summary>
    public bool Contains(FileIdentity identity)
    {
        using OrderedLock.Scope scope = _lock.Enter();
        return _cached.ContainsKey(identity);
    }

    /// <summary>
    /// Returns a lease on the mapping of <paramref name="buffer"/>, mapping it on a miss. The caller disposes the lease;
    /// <paramref name="reference"/>, if given, is handed to the lease and disposed with it.
    /// </summary>
    internal CpuMapping Acquire(LinuxBuffer buffer, DmaBufHandle? reference)
    {
        long length = RoundToPages(buffer.MappedLength);
        Region? region;
        List<Region>? drop = null;
        using (OrderedLock.Scope scope = _lock.Enter())
        {
            if (_cached.TryGetValue(buffer.Identity, out region))
            {
                if (region.Length >= length)
                {
                    region.Count++;
                    _lru.Remove(region.Node);
                    _lru.AddFirst(region.Node);
                    _hits++;
                    LinuxMetrics.s_mmapHits.Add(1);
                    return new CpuMapping(this, region, buffer.Size, reference);
                }

                // Mapped shorter for another view of the same file (an import that claimed less): replace it.
                RemoveLocked(region);
                if (--region.Count == 0)
                {
                    (drop = []).Add(region);
                }
            }

            _misses++;
        }

        Unmap(drop);
        drop = null;
        LinuxMetrics.s_mmapMisses.Add(1);
        nint address = Interop.Libc.MapShared(buffer.Fd, length, buffer.Populate);
        CheckCovered(buffer, address, length);
        var fresh = new Region(buffer.Identity, address, length);
        using (OrderedLock.Scope scope = _lock.Enter())
        {
            _mapCalls++;
            _bytesMapped += length;
            _liveMappings++;
            _liveBytes += length;
            if (_cached.TryGetValue(buffer.Identity, out region) && region.Length >= length)
            {
                // Another thread mapped it meanwhile: use theirs, give ours back.
                region.Count++;
                fresh.Count = 0;
                (drop = []).Add(fresh);
            }
            else
            {
                if (region is not null)
                {
                    RemoveLocked(region); // a shorter one another thread put there meanwhile
                    if (--region.Count == 0)
                    {
                        (drop ??= []).Add(region);
                    }
                }

                region = fresh;
                region.Count = 2; // the cache's and the caller's
                _cached.Add(region.Identity, region);
                _lru.AddFirst(region.Node);
                _cachedBytes += length;
                while (_cachedBytes > BudgetBytes && _lru.Last is { } oldest)
                {
                    Region victim = oldest.Value;
                    RemoveLocked(victim);
                    _evictions++;
                    LinuxMetrics.s_mmapEvictions.Add(1);
                    if (--victim.Count == 0)
                    {
                        (drop ??= []).Add(victim);
                    }
                }
            }

            AssertInvariantsLocked();
        }

        LinuxMetrics.s_mmaps.Add(1);
        LinuxMetrics.s_bytesMapped.Add(length);
        Unmap(drop);
        return new CpuMapping(this, region, buffer.Size, reference);
    }

    /// <summary>The buffer of <paramref name="identity"/> was released: its cached mapping goes (rule 3).</summary>
    internal void Forget(FileIdentity identity)
    {
        List<Region>? drop = null;
        using (OrderedLock.Scope scope = _lock.Enter())
        {
            if (_cached.TryGetValue(identity, out Region? region))
            {
                RemoveLocked(region);
                if (--region.Count == 0)
                {
                    (drop = []).Add(region);
                }
            }

            AssertInvariantsLocked();
        }

        Unmap(drop);
    }

    /// <summary>A lease was disposed.</summary>
    internal void Release(Region region)
    {
        List<Region>? drop = null;
        using (OrderedLock.Scope scope = _lock.Enter())
        {
            Debug.Assert(region.Count > 0, "mapping released more often than acquired");
            if (--region.Count == 0)
            {
                (drop = []).Add(region);
            }
        }

        Unmap(drop);
    }

    /// <summary>
    /// After the mmap: the file must still hold every byte the buffer claims, or touching the end would SIGBUS. Import
    /// checks this before (seals, then size); this is the check of what the mapping really has, after the fact.
    /// </summary>
    private static void CheckCovered(LinuxBuffer buffer, nint address, long length)
    {
        long fileSize;
        try
        {
            fileSize = Interop.Libc.FStat(buffer.Fd).Size;
        }
        catch
        {
            Interop.Libc.Unmap(address, length);
            throw;
        }

        if (fileSize < buffer.MappedLength)
        {
            Interop.Libc.Unmap(address, length);
            throw new BufferImportException(
                ChannelErrorReason.BufferTooSmall,
                $"The file behind buffer {buffer.Identity} has {fileSize} bytes, fewer than the {buffer.MappedLength} it was mapped for; the mapping was undone.");
        }
    }

    private void RemoveLocked(Region region)
    {
        _cached.Remove(region.Identity);
        _lru.Remove(region.Node);
        _cachedBytes -= region.Length;
    }

    private void Unmap(List<Region>? regions)
    {
        if (regions is null)
        {
            return;
        }

        foreach (Region r in regions)
        {
            Interop.Libc.Unmap(r.Address, r.Length);
            LinuxMetrics.s_munmaps.Add(1);
            using OrderedLock.Scope scope = _lock.Enter();
            _unmapCalls++;
            _liveMappings--;
            _liveBytes -= r.Length;
        }
    }

    private static long RoundToPages(long length)
    {
        long page = Environment.SystemPageSize;
        return (length + page - 1) / page * page;
    }

    [Conditional("DEBUG")]
    private void AssertInvariantsLocked()
    {
        Debug.Assert(_lock.IsHeldByCurrentThread);
        Debug.Assert(_cached.Count == _lru.Count, "cache index and LRU list disagree");
        long bytes = 0;
        foreach (Region r in _lru)
        {
            Debug.Assert(r.Count >= 1, "a cached mapping has no count for the cache");
            Debug.Assert(ReferenceEquals(_cached[r.Identity], r), "LRU entry not indexed");
            bytes += r.Length;
        }

        Debug.Assert(bytes == _cachedBytes, "cached byte count is off");
        Debug.Assert(_liveMappings >= _cached.Count, "fewer live mappings than cached ones");
    }

    /// <summary>One mmap: its address, page-rounded length and count of holders (the cache and the leases).</summary>
    internal sealed class Region
    {
        internal Region(FileIdentity identity, nint address, long length)
        {
            Identity = identity;
            Address = address;
            Length = length;
            Node = new LinkedListNode<Region>(this);
        }

        internal FileIdentity Identity { get; }

        internal nint Address { get; }

        internal long Length { get; }

        internal LinkedListNode<Region> Node { get; }

        /// <summary>Holders; changed only under the cache lock.</summary>
        internal int Count { get; set; }
    }
}

// Ownership: a SharedMappingCache is owned by whoever manages the address space (a driver for an IOMMU domain) and is
// disposed by it, after the import contexts that use it. Its mappings are metadata entries on their buffers (owner:
// this cache): the buffer's release, the cache's Dispose, a move or an eviction releases each — whichever comes first.
namespace DmaBuf;

/// <summary>
/// One device mapping per (buffer, address space), shared by every device of that address space (Vetter's "which iommu
/// serves which devices" answer, <see cref="ImportMappingMode.PerAddressSpace"/>), bounded by a byte budget with LRU
/// eviction of mappings no import is using.
/// </summary>
/// <remarks>
/// <para>A mapping never keeps its buffer alive (rule 3); disposing the cache unmaps every mapping it still has, on every
/// buffer (rule 4).</para>
/// <para>A mapping is in use while an <see cref="ImportedBuffer"/> use that mapped it lasts; only mappings not in use are
/// evicted. Every public member is thread-safe.</para>
/// </remarks>
public sealed class SharedMappingCache : MetadataOwner
{
    private static readonly MetadataKey<SharedMapping> s_key = new("shared-mapping", dependsOnPlacement: true);

    private readonly CacheBudget _budget;
    private Func<CacheSlot, bool>? _evict;
    private long _hits;
    private long _misses;
    private long _evictions;
    private long _invalidations;

    /// <summary>Creates the cache of <paramref name="addressSpace"/>.</summary>
    /// <param name="addressSpace">The address space (IOMMU domain) whose devices share the mappings.</param>
    /// <param name="budgetBytes">Most bytes of mappings kept; beyond it mappings not in use are evicted, least recently used first.</param>
    /// <param name="name">Name for listings; the address space's when null.</param>
    public SharedMappingCache(IDmaAddressSpace addressSpace, long budgetBytes = long.MaxValue, string? name = null)
        : base(name ?? $"address space {addressSpace?.Name} mappings")
    {
        ArgumentNullException.ThrowIfNull(addressSpace);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(budgetBytes);
        AddressSpace = addressSpace;
        _budget = new CacheBudget(budgetBytes);
    }

    /// <summary>The address space served.</summary>
    public IDmaAddressSpace AddressSpace { get; }

    /// <summary>Byte budget.</summary>
    public long BudgetBytes => _budget.BudgetBytes;

    /// <summary>Bytes mapped by the cache now.</summary>
    public long CachedBytes => _budget.Bytes;

    /// <summary>Mappings cached now.</summary>
    public int Count => _budget.Count;

    /// <summary>Requests answered with an existing mapping.</summary>
    public long Hits => Interlocked.Read(ref _hits);

    /// <summary>Requests that created a mapping.</summary>
    public long Misses => Interlocked.Read(ref _misses);

    /// <summary>Mappings evicted to stay within budget.</summary>
    public long Evictions => Interlocked.Read(ref _evictions);

    /// <summary>Mappings dropped because their buffer moved.</summary>
    public long Invalidations => Interlocked.Read(ref _invalidations);

    /// <summary>
    /// Whether at least every other miss evicted a mapping: the budget is smaller than the set of buffers in use, so each
    /// is mapped again just after being dropped. (Unlike a per-importer cache, hits stay high while it thrashes: the
    /// other devices of the space hit the mapping the first one just made.)
    /// </summary>
    public bool IsThrashing
    {
        get
        {
            long e = Evictions;
            return e > 0 && e * 2 >= Misses;
        }
    }

    /// <summary>The mapping of <paramref name="buffer"/>, made through <paramref name="device"/> if there is none; returned in use.</summary>
    internal SharedMapping Acquire(DmaBuffer buffer, IDmaDevice device, out bool created)
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        while (true)
        {
            if (buffer.Metadata.TryUse(s_key, this, out SharedMapping? mapping))
            {
                Interlocked.Increment(ref _hits);
                DmaBufMetrics.s_cacheHits.Add(1);
                _budget.Touch(mapping.Slot);
                created = false;
                return mapping;
            }

            mapping = Create(buffer, device, out bool added);
            if (added)
            {
                Interlocked.Increment(ref _misses);
                DmaBufMetrics.s_cacheMisses.Add(1);
                _budget.Touch(mapping.Slot);
                _budget.Charge(mapping.Slot, mapping.Mapping.Bytes);
                EvictOverBudget();
                created = true;
                return mapping;
            }
        }
    }

    // The miss in a method of its own: its closure (it captures the device) would otherwise be allocated on every hit.
    private SharedMapping Create(DmaBuffer buffer, IDmaDevice device, out bool added) =>
        buffer.Metadata.GetOrAdd(
            s_key,
            this,
            b => new SharedMapping(this, CachedMapping.Create(b, device, DmaDirection.Bidirectional)),
            static (m, _) => m.ReleaseFromEntry(),
            out added);

    /// <summary>Ends a use begun by <see cref="Acquire"/>.</summary>
    internal void Release(SharedMapping mapping)
    {
        if (mapping.Slot.EndUse() == 0)
        {
            EvictOverBudget();
        }
    }

    internal void Forget(SharedMapping mapping) => _budget.Forget(mapping.Slot);

    internal override void OnEntryReleased(MetadataEntry entry, MetadataReleaseReason reason)
    {
        if (reason == MetadataReleaseReason.Invalidated)
        {
            Interlocked.Increment(ref _invalidations);
        }
    }

    private void EvictOverBudget()
    {
        // One delegate per cache, made on first use: the path that ends a use under budget allocates nothing.
        _evict ??= slot => ((SharedMapping)slot.Item).Buffer is { } buffer
            && buffer.Metadata.Remove(s_key, this, MetadataReleaseReason.Evicted, CacheSlot.ClaimIfUnused);
        int evicted = _budget.EvictOverBudget(_evict);
        if (evicted > 0)
        {
            Interlocked.Add(ref _evictions, evicted);
            DmaBufMetrics.s_cacheEvictions.Add(evicted);
        }
    }
}

/// <summary>One shared mapping: the buffer-owned mapping and its slot in the cache.</summary>
internal sealed class SharedMapping : ICachedItem
{
    private readonly SharedMappingCache _cache;

    public SharedMapping(SharedMappingCache cache, CachedMapping mapping)
    {
        _cache = cache;
        Mapping = mapping;
        Slot = new CacheSlot(this, inUse: true);
    }

    public CachedMapping Mapping { get; }

    public CacheSlot Slot { get; }

    public ScatterTable Table => Mapping.Table;

    public bool IsReleased => Slot.IsReleased;

    /// <summary>The buffer, while the mapping lives.</summary>
    public DmaBuffer? Buffer => IsReleased ? null : Mapping.Attachment.Buffer;

    public void RevokeLocked()
    {
        Slot.RevokeLocked();
        ((IBufferOwnedState)Mapping).RevokeLocked();
    }

    public void ReleaseFromEntry()
    {
        if (Slot.TryMarkReleased())
        {
            _cache.Forget(this);
            Mapping.Release();
        }
    }

    public override string ToString() => $"shared mapping of {Mapping.Attachment.Buffer} in {_cache.AddressSpace.Name}";
}

/// <summary>Figures the caches share.</summary>
internal static class CacheStatistics
{
    /// <summary>A cache thrashes when it has evicted about as often as it missed and fewer than one lookup in ten hit.</summary>
    public static bool IsThrashing(long hits, long misses, long evictions) =>
        evictions > 0 && evictions * 2 >= misses && hits * 10 < hits + misses;
}

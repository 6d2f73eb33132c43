// Ownership: an ImportContext holds no buffer references. Each ImportedBuffer it hands out is a metadata entry on the
// buffer (owner: this context), so the buffer's release, the context's Dispose, a move or an eviction releases it —
// whichever comes first — and the context's tables forget it then. Lookups go through the buffer's own metadata, keyed
// by the buffer's identity (rule 6), never by an fd number or an address.
using System.Diagnostics;

namespace DmaBuf;

/// <summary>How an <see cref="ImportContext"/> gets device addresses for an imported buffer.</summary>
public enum ImportMappingMode
{
    /// <summary>Each import maps through its own attachment and the exporter caches that mapping (<c>cache_sgt_mapping</c>).</summary>
    PerAttachment,

    /// <summary>One mapping per (buffer, address space), shared by every device in that IOMMU domain, kept by a <see cref="SharedMappingCache"/>.</summary>
    PerAddressSpace,
}

/// <summary>
/// An importer context (a driver instance for one device, a DRM file): importing the same buffer again gives the same
/// <see cref="ImportedBuffer"/> (DRM PRIME's guarantee), with its mapping cached. Bounded by a byte budget with LRU
/// eviction of imports not in use.
/// </summary>
/// <remarks>
/// <para>An import never keeps its buffer alive: its attachment is owned by the buffer and released with it (rule 3).</para>
/// <para>Use: <c>using ImportedBuffer imp = context.Import(handle); ScatterTable t = imp.Map(direction);</c> — disposing
/// ends the use; the import stays cached. An import in use is never evicted; the device addresses it returns stay mapped
/// until the use ends, unless the buffer moves (a dynamic exporter invalidates them) or its last reference goes.</para>
/// <para><b>Accounting.</b> In <see cref="ImportMappingMode.PerAttachment"/> mode an import is charged the bytes it maps
/// now, once: a remap in another direction replaces its mapping and its charge. In
/// <see cref="ImportMappingMode.PerAddressSpace"/> mode the context maps nothing itself; the bytes are the shared
/// cache's (<see cref="SharedMappingCache.CachedBytes"/>), under its own budget.</para>
/// <para>Every public member is thread-safe.</para>
/// </remarks>
public sealed class ImportContext : MetadataOwner
{
    private static readonly MetadataKey<ImportedBuffer> s_importKey = new("import", dependsOnPlacement: true);

    private readonly CacheBudget _budget;
    private Func<CacheSlot, bool>? _evict;
    private long _hits;
    private long _misses;
    private long _mapHits;
    private long _mapMisses;
    private long _evictions;
    private long _invalidations;

    /// <summary>Creates a context for <paramref name="device"/> whose imports map through their own attachments.</summary>
    /// <param name="device">The importing device.</param>
    /// <param name="mode">How mappings are cached; <see cref="ImportMappingMode.PerAddressSpace"/> needs the constructor
    /// that takes a <see cref="SharedMappingCache"/>.</param>
    /// <param name="budgetBytes">Most bytes of mappings kept; imports beyond it are evicted, least recently used first.</param>
    /// <param name="name">Name for listings; the device's when null.</param>
    /// <exception cref="ArgumentException"><paramref name="mode"/> is <see cref="ImportMappingMode.PerAddressSpace"/>.</exception>
    public ImportContext(IDmaDevice device, ImportMappingMode mode = ImportMappingMode.PerAttachment, long budgetBytes = long.MaxValue, string? name = null)
        : base(name ?? $"{device?.Name} imports")
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(budgetBytes);
        if (mode != ImportMappingMode.PerAttachment)
        {
            throw new ArgumentException(
                $"Import mode {mode} shares mappings through a SharedMappingCache of the device's address space: use new ImportContext(device, sharedMappings).",
                nameof(mode));
        }

        Device = device;
        Mode = mode;
        _budget = new CacheBudget(budgetBytes);
    }

    /// <summary>
    /// Creates a context for <paramref name="device"/> whose imports share one mapping per buffer with every other device
    /// of <paramref name="sharedMappings"/>' address space (<see cref="ImportMappingMode.PerAddressSpace"/>).
    /// Its imports map nothing themselves, so only the shared cache's budget evicts mappings.
    /// </summary>
    /// <param name="device">The importing device; it must be in the cache's address space.</param>
    /// <param name="sharedMappings">The address space's mapping cache; owned by the caller, who disposes it after its contexts.</param>
    /// <exception cref="ArgumentException">The device is in another address space.</exception>
    public ImportContext(IDmaDevice device, SharedMappingCache sharedMappings)
        : base($"{device?.Name} imports")
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(sharedMappings);
        if (!ReferenceEquals(device.AddressSpace, sharedMappings.AddressSpace))
        {
            throw new ArgumentException(
                $"{device.Name} is in address space '{device.AddressSpace.Name}', but the shared mapping cache serves '{sharedMappings.AddressSpace.Name}'.",
                nameof(sharedMappings));
        }

        Device = device;
        Mode = ImportMappingMode.PerAddressSpace;
        SharedMappings = sharedMappings;
        _budget = new CacheBudget(long.MaxValue);
    }

    /// <summary>The importing device.</summary>
    public IDmaDevice Device { get; }

    /// <summary>How mappings are cached.</summary>
    public ImportMappingMode Mode { get; }

    /// <summary>The address space's shared mapping cache (<see cref="ImportMappingMode.PerAddressSpace"/>), or null.</summary>
    public SharedMappingCache? SharedMappings { get; }

    /// <summary>Byte budget of cached mappings.</summary>
    public long BudgetBytes => _budget.BudgetBytes;

    /// <summary>Bytes of mappings this context's imports hold now, each counted once.</summary>
    public long CachedBytes => _budget.Bytes;

    /// <summary>Imports answered from the cache (the same object returned again).</summary>
    public long Hits => Interlocked.Read(ref _hits);

    /// <summary>Imports that had to attach.</summary>
    public long Misses => Interlocked.Read(ref _misses);

    /// <summary>Map requests answered with cached device addresses.</summary>
    public long MapHits => Interlocked.Read(ref _mapHits);

    /// <summary>Map requests that created a mapping.</summary>
    public long MapMisses => Interlocked.Read(ref _mapMisses);

    /// <summary>Imports evicted to stay within budget.</summary>
    public long Evictions => Interlocked.Read(ref _evictions);

    /// <summary>Imports dropped because their buffer moved.</summary>
    public long Invalidations => Interlocked.Read(ref _invalidations);

    /// <summary>
    /// Whether the cache thrashes: it has evicted, and fewer than one lookup in ten hits (a budget smaller than the
    /// working set evicts every buffer just before it is used again).
    /// </summary>
    public bool IsThrashing => CacheStatistics.IsThrashing(Hits, Misses, Evictions);

    /// <summary>Imported buffers cached now.</summary>
    public int Count => _budget.Count;

    /// <summary>
    /// Imports the buffer behind <paramref name="handle"/>: the same object for the same buffer as long as it is cached.
    /// Begins a use, which keeps the import from eviction; dispose the result to end it.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The handle or the context was disposed, or the buffer is being released.</exception>
    public ImportedBuffer Import(DmaBufHandle handle)
    {
        ArgumentNullException.ThrowIfNull(handle);
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        DmaBuffer buffer = handle.Buffer;
        while (true)
        {
            if (buffer.Metadata.TryUse(s_importKey, this, out ImportedBuffer? imported))
            {
                Interlocked.Increment(ref _hits);
                DmaBufMetrics.s_cacheHits.Add(1);
                _budget.Touch(imported.Slot);
                return imported;
            }

            // A new import begins life in use, so no eviction can take it between being stored and being returned.
            // The caller ends that use by disposing what it gets back.
#pragma warning disable CA2000
            imported = buffer.Metadata.GetOrAdd(
                s_importKey,
                this,
                b => new ImportedBuffer(this, b, DmaBufAttachment.CreateOwnedByBuffer(b, Device, importer: null)),
                static (imp, reason) => imp.ReleaseFromEntry(reason),
                out bool added);
#pragma warning restore CA2000
            if (added)
            {
                Interlocked.Increment(ref _misses);
                DmaBufMetrics.s_cacheMisses.Add(1);
                _budget.Touch(imported.Slot);
                return imported;
            }

            // Another thread stored an import first: begin a use of that one (it may already be on its way out).
        }
    }

    internal ScatterTable MapPerAttachment(ImportedBuffer imported, DmaDirection direction)
    {
        ScatterTable t = imported.Attachment.MapCached(direction, out bool hit);
        if (hit)
        {
            Interlocked.Increment(ref _mapHits);
            return t;
        }

        Interlocked.Increment(ref _mapMisses);
        _budget.Charge(imported.Slot, (long)t.TotalLength);
        EvictOverBudget();
        return t;
    }

    internal void CountSharedMap(bool created) => Interlocked.Increment(ref created ? ref _mapMisses : ref _mapHits);

    internal void OnUseEnded(ImportedBuffer imported)
    {
        if (!imported.Slot.InUse)
        {
            EvictOverBudget();
        }
    }

    internal override void OnEntryReleased(MetadataEntry entry, MetadataReleaseReason reason)
    {
        if (reason == MetadataReleaseReason.Invalidated)
        {
            Interlocked.Increment(ref _invalidations);
        }
    }

    internal void Forget(ImportedBuffer imported) => _budget.Forget(imported.Slot);

    private void EvictOverBudget()
    {
        // One delegate per cache, made on first use: the path that ends a use under budget allocates nothing.
        _evict ??= slot => ((ImportedBuffer)slot.Item).Buffer is { } buffer
            && buffer.Metadata.Remove(s_importKey, this, MetadataReleaseReason.Evicted, CacheSlot.ClaimIfUnused);
        int evicted = _budget.EvictOverBudget(_evict);
        if (evicted > 0)
        {
            Interlocked.Add(ref _evictions, evicted);
            DmaBufMetrics.s_cacheEvictions.Add(evicted);
        }
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        Debug.Assert(Count == 0 || !disposing, "every import is released by the owner teardown");
    }
}

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

    /// <summary>One mapping per (buffer, address space), shared by every device in that IOMMU domain.</summary>
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
/// ends the use; the import stays cached.</para>
/// </remarks>
public sealed class ImportContext : MetadataOwner
{
    private static readonly MetadataKey<ImportedBuffer> s_importKey = new("import", dependsOnPlacement: true);
    private static readonly MetadataKey<CachedMapping> s_domainKey = new("domain-mapping", dependsOnPlacement: true);
    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<IDmaAddressSpace, MetadataOwner> s_domainOwners = [];

    private readonly Lock _lruLock = new();
    private readonly LinkedList<ImportedBuffer> _lru = [];
    private long _bytes;
    private long _hits;
    private long _misses;
    private long _mapHits;
    private long _mapMisses;
    private long _evictions;
    private long _invalidations;

    /// <summary>Creates a context for <paramref name="device"/>.</summary>
    /// <param name="device">The importing device.</param>
    /// <param name="mode">How mappings are cached.</param>
    /// <param name="budgetBytes">Most bytes of mappings kept; imports beyond it are evicted, least recently used first.</param>
    /// <param name="name">Name for listings; the device's when null.</param>
    public ImportContext(IDmaDevice device, ImportMappingMode mode = ImportMappingMode.PerAttachment, long budgetBytes = long.MaxValue, string? name = null)
        : base(name ?? $"{device.Name} imports")
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(budgetBytes);
        Device = device;
        Mode = mode;
        BudgetBytes = budgetBytes;
    }

    /// <summary>The importing device.</summary>
    public IDmaDevice Device { get; }

    /// <summary>How mappings are cached.</summary>
    public ImportMappingMode Mode { get; }

    /// <summary>Byte budget of cached mappings.</summary>
    public long BudgetBytes { get; }

    /// <summary>Bytes of mappings cached now.</summary>
    public long CachedBytes => Interlocked.Read(ref _bytes);

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
    public bool IsThrashing
    {
        get
        {
            long h = Hits, m = Misses, e = Evictions;
            return e > 0 && e * 2 >= m && h * 10 < h + m;
        }
    }

    /// <summary>Imported buffers cached now.</summary>
    public int Count
    {
        get
        {
            lock (_lruLock)
            {
                return _lru.Count;
            }
        }
    }

    /// <summary>
    /// Imports the buffer behind <paramref name="handle"/>: the same object for the same buffer as long as it is cached.
    /// Dispose the result to end the use.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The handle or the context was disposed.</exception>
    public ImportedBuffer Import(DmaBufHandle handle)
    {
        ArgumentNullException.ThrowIfNull(handle);
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        DmaBuffer buffer = handle.Buffer;
        if (buffer.Metadata.TryGet(s_importKey, this, out ImportedBuffer? imported))
        {
            Interlocked.Increment(ref _hits);
            DmaBufMetrics.s_cacheHits.Add(1);
            imported.BeginUse();
            Touch(imported);
            return imported;
        }

        Interlocked.Increment(ref _misses);
        DmaBufMetrics.s_cacheMisses.Add(1);
        imported = buffer.Metadata.GetOrAdd(
            s_importKey,
            this,
            b => new ImportedBuffer(this, b, DmaBufAttachment.CreateOwnedByBuffer(b, Device, importer: null)),
            static (imp, reason) => imp.ReleaseFromEntry(reason));
        imported.BeginUse();
        Touch(imported);
        return imported;
    }

    internal ScatterTable MapFor(ImportedBuffer imported, DmaDirection direction)
    {
        if (Mode == ImportMappingMode.PerAttachment)
        {
            ScatterTable t = imported.Attachment.MapCached(direction, out bool hit);
            if (!hit)
            {
                Interlocked.Increment(ref _mapMisses);
                Charge(imported, (long)t.TotalLength);
            }
            else
            {
                Interlocked.Increment(ref _mapHits);
            }

            return t;
        }

        // One mapping per (buffer, address space), owned by the address space's metadata owner: every device in the
        // domain gets the same device addresses. Mapped both ways because it serves readers and writers.
        MetadataOwner domainOwner = DomainOwner(Device.AddressSpace);
        DmaBuffer buffer = imported.Buffer ?? throw new ObjectDisposedException(nameof(ImportedBuffer));
        CachedMapping m = buffer.Metadata.GetOrAddMapping(
            s_domainKey, domainOwner, Device, DmaDirection.Bidirectional, out bool created);
        Interlocked.Increment(ref created ? ref _mapMisses : ref _mapHits);
        return m.Table;
    }

    /// <summary>The metadata owner that stands for <paramref name="space"/>: disposing it releases its shared mappings.</summary>
    public static MetadataOwner DomainOwner(IDmaAddressSpace space)
    {
        ArgumentNullException.ThrowIfNull(space);
        return s_domainOwners.GetValue(space, static s => new MetadataOwner($"address space {s.Name}"));
    }

    internal override void OnEntryReleased(MetadataEntry entry, MetadataReleaseReason reason)
    {
        if (reason == MetadataReleaseReason.Invalidated)
        {
            Interlocked.Increment(ref _invalidations);
        }
    }

    internal void Forget(ImportedBuffer imported)
    {
        lock (_lruLock)
        {
            if (imported.LruNode.List is not null)
            {
                _lru.Remove(imported.LruNode);
            }

            _bytes -= imported.ChargedBytes;
            imported.ChargedBytes = 0;
        }
    }

    private void Charge(ImportedBuffer imported, long bytes)
    {
        lock (_lruLock)
        {
            if (imported.LruNode.List is null)
            {
                return; // released meanwhile
            }

            imported.ChargedBytes += bytes;
            _bytes += bytes;
        }

        EvictOverBudget();
    }

    private void Touch(ImportedBuffer imported)
    {
        lock (_lruLock)
        {
            if (imported.IsReleased)
            {
                return;
            }

            if (imported.LruNode.List is not null)
            {
                _lru.Remove(imported.LruNode);
            }

            _lru.AddFirst(imported.LruNode);
        }
    }

    private void EvictOverBudget()
    {
        while (true)
        {
            ImportedBuffer? victim = null;
            lock (_lruLock)
            {
                if (_bytes <= BudgetBytes)
                {
                    return;
                }

                for (LinkedListNode<ImportedBuffer>? n = _lru.Last; n is not null; n = n.Previous)
                {
                    if (!n.Value.InUse)
                    {
                        victim = n.Value;
                        break;
                    }
                }
            }

            if (victim?.Buffer is not { } buffer)
            {
                return; // everything cached is in use: over budget until a use ends
            }

            if (buffer.Metadata.Remove(s_importKey, this, MetadataReleaseReason.Evicted))
            {
                Interlocked.Increment(ref _evictions);
                DmaBufMetrics.s_cacheEvictions.Add(1);
            }
            else
            {
                Forget(victim);
            }
        }
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        Debug.Assert(Count == 0 || !disposing, "every import is released by the owner teardown");
    }
}

/// <summary>
/// A buffer imported into an <see cref="ImportContext"/> (what a GEM object is to a PRIME import). The same object is
/// returned on every import of the same buffer while cached. Dispose ends one use; the import stays cached until its
/// buffer is released, the context is disposed, the buffer moves, or the budget evicts it.
/// </summary>
public sealed class ImportedBuffer : IDisposable
{
    private readonly ImportContext _context;
    private int _uses;
    private int _released;

    internal ImportedBuffer(ImportContext context, DmaBuffer buffer, DmaBufAttachment attachment)
    {
        _context = context;
        Buffer = buffer;
        Attachment = attachment;
        LruNode = new LinkedListNode<ImportedBuffer>(this);
    }

    /// <summary>The imported buffer; null once released.</summary>
    public DmaBuffer? Buffer { get; private set; }

    /// <summary>The buffer-owned attachment of the import.</summary>
    public DmaBufAttachment Attachment { get; }

    /// <summary>Whether the import was released (its buffer went, it was evicted, invalidated or its context disposed).</summary>
    public bool IsReleased => Volatile.Read(ref _released) != 0;

    /// <summary>Uses begun by <see cref="ImportContext.Import"/> and not yet ended.</summary>
    public int Uses => Volatile.Read(ref _uses);

    internal bool InUse => Volatile.Read(ref _uses) > 0;

    internal LinkedListNode<ImportedBuffer> LruNode { get; }

    internal long ChargedBytes { get; set; }

    /// <summary>Device addresses of the buffer for the context's device, from the cache when it has them.</summary>
    /// <exception cref="ObjectDisposedException">The import was released.</exception>
    public ScatterTable Map(DmaDirection direction)
    {
        ObjectDisposedException.ThrowIf(IsReleased, this);
        return _context.MapFor(this, direction);
    }

    /// <summary>Ends one use.</summary>
    public void Dispose()
    {
        if (Interlocked.Decrement(ref _uses) < 0)
        {
            Interlocked.Increment(ref _uses);
            throw new InvalidOperationException("ImportedBuffer disposed more often than imported.");
        }
    }

    internal void BeginUse() => Interlocked.Increment(ref _uses);

    internal void ReleaseFromEntry(MetadataReleaseReason reason)
    {
        if (Interlocked.Exchange(ref _released, 1) != 0)
        {
            return;
        }

        _context.Forget(this);
        Attachment.Dispose();
        Buffer = null;
    }
}

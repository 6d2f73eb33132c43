// Ownership: these strategies keep no buffer references. What they cache lives on the buffer (metadata entries,
// buffer-owned attachments) and is released with it, or when the strategy's owners are disposed.
namespace DmaBuf.Simulation;

/// <summary>
/// Bin Wang's patch, done right: each importer stores its IOMMU mapping as metadata on the buffer, under its own owner.
/// The mapping is made on first use and released exactly once, when the buffer dies, the importer goes, or the buffer
/// moves — the entry never keeps the buffer alive.
/// </summary>
public sealed class MetadataStrategy : MappingStrategy
{
    private static readonly MetadataKey<CachedMapping> s_key = new("iommu-mapping");
    private readonly Dictionary<SimDevice, MetadataOwner> _owners = [];

    /// <inheritdoc/>
    public override string Name => Meta;

    /// <inheritdoc/>
    public override ScatterTable Acquire(SimDevice device, DmaBufHandle handle, DmaDirection direction)
    {
        if (!_owners.TryGetValue(device, out MetadataOwner? owner))
        {
            owner = new MetadataOwner($"{device.Name} driver");
            _owners.Add(device, owner);
        }

        CachedMapping m = handle.Buffer.Metadata.GetOrAddMapping(s_key, owner, device, direction, out bool created);
        if (created)
        {
            CacheMisses++;
        }
        else
        {
            CacheHits++;
        }

        return m.Table;
    }

    /// <inheritdoc/>
    public override void Release(SimDevice device, DmaBufHandle handle, ScatterTable mapping)
    {
    }

    /// <summary>The patch's second example: devices with one chain format share one chain per buffer, as metadata.</summary>
    public override DescriptorChain AcquireChain(SimDevice device, DmaBufHandle handle, ScatterTable mapping) =>
        StoredChain(device, handle, mapping, SharedChainOwner(device));

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        foreach (MetadataOwner o in _owners.Values)
        {
            o.Dispose();
        }

        _owners.Clear();
        base.Dispose(disposing);
    }
}

/// <summary>
/// Vetter's third answer and the shared-IOMMU answer: each importer imports through an <see cref="ImportContext"/>, so
/// re-importing a buffer gives the same object (DRM PRIME), and the mapping is cached — per attachment by the exporter
/// (<c>exporter-cache</c>), or once per (buffer, IOMMU domain) for every device in the domain (<c>domain-share</c>).
/// </summary>
public sealed class ImportCacheStrategy : MappingStrategy
{
    private readonly Dictionary<SimDevice, ImportContext> _contexts = [];
    private readonly Dictionary<IDmaAddressSpace, SharedMappingCache> _shared = [];
    private readonly Dictionary<(SimDevice Device, ScatterTable Table), List<ImportedBuffer>> _inUse = [];
    private readonly System.Runtime.CompilerServices.ConditionalWeakTable<ImportedBuffer, DescriptorChain> _chains = [];
    private readonly ImportMappingMode _mode;
    private readonly long _budget;

    /// <summary>Creates the strategy.</summary>
    public ImportCacheStrategy(ImportMappingMode mode, long budgetBytes = long.MaxValue)
    {
        _mode = mode;
        _budget = budgetBytes;
    }

    /// <inheritdoc/>
    public override string Name => _mode == ImportMappingMode.PerAttachment ? ExporterCache : DomainShare;

    /// <inheritdoc/>
    public override bool IsThrashing => _contexts.Values.Any(c => c.IsThrashing) || _shared.Values.Any(c => c.IsThrashing);

    /// <inheritdoc/>
    public override long CachedBytes => _contexts.Values.Sum(c => c.CachedBytes) + _shared.Values.Sum(c => c.CachedBytes);

    /// <summary>The importer contexts, one per device.</summary>
    public IReadOnlyCollection<ImportContext> Contexts => _contexts.Values;

    /// <summary>domain-share's mapping caches, one per address space, each under the strategy's byte budget.</summary>
    public IReadOnlyCollection<SharedMappingCache> SharedCaches => _shared.Values;

    /// <inheritdoc/>
    public override ScatterTable Acquire(SimDevice device, DmaBufHandle handle, DmaDirection direction)
    {
        if (!_contexts.TryGetValue(device, out ImportContext? context))
        {
            context = _mode == ImportMappingMode.PerAttachment
                ? new ImportContext(device, _mode, _budget)
                : new ImportContext(device, SharedCacheOf(device.AddressSpace));
            _contexts.Add(device, context);
        }

        ImportedBuffer imported = context.Import(handle);
        try
        {
            ScatterTable table = imported.Map(direction);
            if (!_inUse.TryGetValue((device, table), out List<ImportedBuffer>? uses))
            {
                _inUse[(device, table)] = uses = [];
            }

            uses.Add(imported);
            Recount();
            return table;
        }
        catch
        {
            imported.Dispose();
            throw;
        }
    }

    /// <summary>
    /// exporter-cache keeps one chain per import (per device); domain-share shares one per (buffer, format, domain).
    /// </summary>
    public override DescriptorChain AcquireChain(SimDevice device, DmaBufHandle handle, ScatterTable mapping)
    {
        if (_mode == ImportMappingMode.PerAddressSpace)
        {
            return StoredChain(device, handle, mapping, SharedChainOwner(device));
        }

        // The chain lists the import's device addresses, so it lives exactly as long as that import: an evicted or
        // invalidated import takes its chain with it, and a re-import builds a new one.
        ImportedBuffer imported = _inUse[(device, mapping)][^1];
        if (!_chains.TryGetValue(imported, out DescriptorChain? chain))
        {
            chain = BuildChain(device, mapping);
            _chains.Add(imported, chain);
        }

        return chain;
    }

    /// <inheritdoc/>
    public override void Release(SimDevice device, DmaBufHandle handle, ScatterTable mapping)
    {
        if (!_inUse.TryGetValue((device, mapping), out List<ImportedBuffer>? uses) || uses.Count == 0)
        {
            throw new ArgumentException("Release of a mapping this strategy did not hand out.", nameof(mapping));
        }

        ImportedBuffer imported = uses[^1];
        uses.RemoveAt(uses.Count - 1);
        if (uses.Count == 0)
        {
            _inUse.Remove((device, mapping));
        }

        imported.Dispose();
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        foreach (ImportedBuffer i in _inUse.Values.SelectMany(u => u))
        {
            i.Dispose();
        }

        _inUse.Clear();
        foreach (ImportContext c in _contexts.Values)
        {
            c.Dispose();
        }

        // The address spaces' caches go after the contexts that map through them.
        foreach (SharedMappingCache c in _shared.Values)
        {
            c.Dispose();
        }

        Recount();
        _contexts.Clear();
        _shared.Clear();
        base.Dispose(disposing);
    }

    private SharedMappingCache SharedCacheOf(IDmaAddressSpace space)
    {
        if (!_shared.TryGetValue(space, out SharedMappingCache? cache))
        {
            cache = new SharedMappingCache(space, _budget);
            _shared.Add(space, cache);
        }

        return cache;
    }

    private void Recount()
    {
        long hits = 0, misses = 0, evictions = 0;
        foreach (ImportContext c in _contexts.Values)
        {
            hits += c.MapHits;
            misses += c.MapMisses;
            evictions += c.Evictions;
        }

        foreach (SharedMappingCache c in _shared.Values)
        {
            evictions += c.Evictions;
        }

        CacheHits = hits;
        CacheMisses = misses;
        CacheEvictions = evictions;
    }
}

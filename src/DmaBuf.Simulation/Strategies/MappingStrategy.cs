// Ownership: a strategy is an importer-side policy. Acquire never takes the caller's handle: the caller owns it for
// the use and disposes it afterwards. Whatever the strategy keeps (attachments, mappings) it owns, and Dispose gives
// all of it back; after Dispose the strategy holds no reference to any buffer.
namespace DmaBuf.Simulation;

/// <summary>
/// How an importer gets a device mapping of a shared buffer each time it is handed one: one of the answers of the
/// dma-buf metadata thread. The scenario calls <see cref="Acquire"/> before a device touches a buffer and
/// <see cref="Release"/> after.
/// </summary>
public abstract class MappingStrategy : IDisposable
{
    /// <summary>The CLI name of the remap strategy.</summary>
    public const string Remap = "remap";

    /// <summary>The CLI name of the keep-attachment strategy.</summary>
    public const string KeepAttachment = "keep-attachment";

    /// <summary>The CLI name of the buffer-metadata strategy.</summary>
    public const string Meta = "meta";

    /// <summary>The CLI name of the exporter-cache strategy.</summary>
    public const string ExporterCache = "exporter-cache";

    /// <summary>The CLI name of the domain-share strategy.</summary>
    public const string DomainShare = "domain-share";

    /// <summary>Strategy names, in the order the CLI shows them.</summary>
    public static IReadOnlyList<string> Names { get; } = [Remap, KeepAttachment, Meta, ExporterCache, DomainShare];

    /// <summary>CLI name.</summary>
    public abstract string Name { get; }

    /// <summary>Uses answered from what the strategy kept.</summary>
    public long CacheHits { get; protected set; }

    /// <summary>Uses that had to attach and map.</summary>
    public long CacheMisses { get; protected set; }

    /// <summary>Kept mappings dropped to stay within a budget.</summary>
    public long CacheEvictions { get; protected set; }

    /// <summary>Descriptor chains built.</summary>
    public long ChainsBuilt { get; private set; }

    /// <summary>Simulated time spent building descriptor chains.</summary>
    public long ChainNs { get; private set; }

    private readonly Dictionary<(DescriptorChainFormat, long), MetadataOwner> _chainOwners = [];
    private static readonly Dictionary<DescriptorChainFormat, MetadataKey<DescriptorChain>> s_chainKeys = [];
    private static readonly Lock s_chainKeysLock = new();

    /// <summary>
    /// Returns the descriptor chain <paramref name="device"/> walks to reach the buffer at <paramref name="mapping"/>.
    /// The default builds one per use; strategies override it to keep or share chains.
    /// </summary>
    public virtual DescriptorChain AcquireChain(SimDevice device, DmaBufHandle handle, ScatterTable mapping) => BuildChain(device, mapping);

    /// <summary>Builds a chain, counting it.</summary>
    protected DescriptorChain BuildChain(SimDevice device, ScatterTable mapping)
    {
        DescriptorChain chain = device.BuildChain(mapping);
        ChainsBuilt++;
        ChainNs += chain.BuildNs;
        return chain;
    }

    /// <summary>
    /// The chain stored on the buffer as metadata under <paramref name="owner"/>, built on first use. With
    /// <paramref name="owner"/> = <see cref="SharedChainOwner"/>, every device with the same format in the same address
    /// space shares one chain per buffer; it goes with the buffer, or when the buffer moves.
    /// </summary>
    protected DescriptorChain StoredChain(SimDevice device, DmaBufHandle handle, ScatterTable mapping, MetadataOwner owner)
    {
        DescriptorChainFormat format = device.ChainFormat ?? throw new InvalidOperationException($"{device.Name} has no descriptor-chain format.");
        return handle.Buffer.Metadata.GetOrAdd(ChainKey(format), owner, _ => BuildChain(device, mapping));
    }

    /// <summary>The owner of chains shared by every device of <paramref name="device"/>'s format and address space.</summary>
    protected MetadataOwner SharedChainOwner(SimDevice device)
    {
        DescriptorChainFormat format = device.ChainFormat ?? throw new InvalidOperationException($"{device.Name} has no descriptor-chain format.");
        (DescriptorChainFormat, long) key = (format, device.AddressSpace.Id);
        if (!_chainOwners.TryGetValue(key, out MetadataOwner? owner))
        {
            owner = new MetadataOwner($"{format.Name} chains in {device.AddressSpace.Name}");
            _chainOwners.Add(key, owner);
        }

        return owner;
    }

    private static MetadataKey<DescriptorChain> ChainKey(DescriptorChainFormat format)
    {
        lock (s_chainKeysLock)
        {
            if (!s_chainKeys.TryGetValue(format, out MetadataKey<DescriptorChain>? key))
            {
                key = new MetadataKey<DescriptorChain>($"chain:{format.Name}");
                s_chainKeys.Add(format, key);
            }

            return key;
        }
    }
    /// <summary>Creates the strategy called <paramref name="name"/>.</summary>
    /// <param name="name">Strategy name.</param>
    /// <param name="cacheBudgetBytes">Byte budget of each importer's cache (exporter-cache); unbounded by default.</param>
    /// <exception cref="ArgumentException">Unknown name; the message lists the valid ones.</exception>
    public static MappingStrategy Create(string name, long cacheBudgetBytes = long.MaxValue) => name switch
    {
        Remap => new RemapStrategy(),
        KeepAttachment => new KeepAttachmentStrategy(),
        Meta => new MetadataStrategy(),
        ExporterCache => new ImportCacheStrategy(ImportMappingMode.PerAttachment, cacheBudgetBytes),
        DomainShare => new ImportCacheStrategy(ImportMappingMode.PerAddressSpace, cacheBudgetBytes),
        _ => throw new ArgumentException($"Unknown strategy '{name}'. Valid: {string.Join(", ", Names)}.", nameof(name)),
    };

    /// <summary>Bytes of mappings the strategy's budgeted caches hold now.</summary>
    public virtual long CachedBytes => 0;

    /// <summary>Whether a cache of this strategy thrashes (evicting while hits stay near zero).</summary>
    public virtual bool IsThrashing => false;

    /// <summary>
    /// The producer is done with a buffer and will free it (a resolution change): let go of whatever keeps it alive.
    /// Strategies whose state belongs to the buffer need do nothing: it goes with the buffer.
    /// </summary>
    public virtual void Retire(long bufferId)
    {
    }

    /// <summary>Returns the device addresses at which <paramref name="device"/> reaches the buffer for one use.</summary>
    public abstract ScatterTable Acquire(SimDevice device, DmaBufHandle handle, DmaDirection direction);

    /// <summary>Ends one use started by <see cref="Acquire"/>.</summary>
    public abstract void Release(SimDevice device, DmaBufHandle handle, ScatterTable mapping);

    /// <summary>Gives back everything the strategy kept.</summary>
    public void Dispose()
    {
        Dispose(disposing: true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Gives back everything the strategy kept; subclasses call the base last.</summary>
    protected virtual void Dispose(bool disposing)
    {
        foreach (MetadataOwner o in _chainOwners.Values)
        {
            o.Dispose();
        }

        _chainOwners.Clear();
    }
}

/// <summary>
/// The status quo the thread complains about: attach, map, unmap and detach on every use, so every frame pays an IOVA
/// allocation, page-table writes and IOTLB invalidations for every importer.
/// </summary>
public sealed class RemapStrategy : MappingStrategy
{
    private readonly Dictionary<ScatterTable, DmaBufAttachment> _inUse = new(ReferenceEqualityComparer.Instance);

    /// <inheritdoc/>
    public override string Name => Remap;

    /// <inheritdoc/>
    public override ScatterTable Acquire(SimDevice device, DmaBufHandle handle, DmaDirection direction)
    {
        DmaBufAttachment attachment = handle.Attach(device);
        try
        {
            ScatterTable table = attachment.Map(direction);
            _inUse.Add(table, attachment);
            CacheMisses++;
            return table;
        }
        catch
        {
            attachment.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    public override void Release(SimDevice device, DmaBufHandle handle, ScatterTable mapping)
    {
        if (!_inUse.Remove(mapping, out DmaBufAttachment? attachment))
        {
            throw new ArgumentException("Release of a mapping this strategy did not hand out.", nameof(mapping));
        }

        attachment.Unmap(mapping);
        attachment.Dispose();
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        foreach (DmaBufAttachment a in _inUse.Values)
        {
            a.Dispose();
        }

        _inUse.Clear();
        base.Dispose(disposing);
    }
}

/// <summary>
/// Vetter's first two answers: the importer keeps its attachment and mapping across uses, looked up by the buffer's
/// identity (never by an fd number or address, rule 6), and lets go only when it is done with the buffer.
/// </summary>
public sealed class KeepAttachmentStrategy : MappingStrategy
{
    private readonly Dictionary<(SimDevice Device, long BufferId), Kept> _kept = [];
    private readonly Dictionary<(SimDevice Device, long BufferId), DescriptorChain> _chains = [];

    /// <inheritdoc/>
    public override string Name => KeepAttachment;

    /// <inheritdoc/>
    public override DescriptorChain AcquireChain(SimDevice device, DmaBufHandle handle, ScatterTable mapping)
    {
        if (!_chains.TryGetValue((device, handle.BufferId), out DescriptorChain? chain))
        {
            chain = BuildChain(device, mapping);
            _chains.Add((device, handle.BufferId), chain);
        }

        return chain;
    }

    /// <summary>Attachments kept.</summary>
    public int KeptCount => _kept.Count;

    /// <inheritdoc/>
    public override ScatterTable Acquire(SimDevice device, DmaBufHandle handle, DmaDirection direction)
    {
        if (_kept.TryGetValue((device, handle.BufferId), out Kept kept))
        {
            if (kept.Direction != direction && kept.Direction != DmaDirection.Bidirectional)
            {
                throw new InvalidOperationException(
                    $"{device.Name} kept {handle.Buffer} mapped {kept.Direction} and now asks for {direction}.");
            }

            CacheHits++;
            return kept.Table;
        }

        DmaBufAttachment attachment = handle.Attach(device);
        try
        {
            ScatterTable table = attachment.Map(direction);
            _kept.Add((device, handle.BufferId), new Kept(attachment, table, direction));
            CacheMisses++;
            return table;
        }
        catch
        {
            attachment.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    public override void Release(SimDevice device, DmaBufHandle handle, ScatterTable mapping)
    {
        if (!_kept.TryGetValue((device, handle.BufferId), out Kept kept) || !ReferenceEquals(kept.Table, mapping))
        {
            throw new ArgumentException("Release of a mapping this strategy did not hand out.", nameof(mapping));
        }
    }

    /// <summary>Lets go of everything kept for <paramref name="bufferId"/> (the importer is done with that buffer).</summary>
    public override void Retire(long bufferId)
    {
        foreach ((SimDevice Device, long BufferId) key in _kept.Keys.Where(k => k.BufferId == bufferId).ToList())
        {
            _kept.Remove(key, out Kept kept);
            _chains.Remove(key);
            kept.Attachment.Unmap(kept.Table);
            kept.Attachment.Dispose();
        }
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        foreach (Kept kept in _kept.Values)
        {
            kept.Attachment.Unmap(kept.Table);
            kept.Attachment.Dispose();
        }

        _kept.Clear();
        _chains.Clear();
        base.Dispose(disposing);
    }

    private readonly record struct Kept(DmaBufAttachment Attachment, ScatterTable Table, DmaDirection Direction);
}

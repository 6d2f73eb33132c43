// Ownership: a CachedMapping belongs to its buffer. Its attachment holds no reference; the mapping is unmapped and the
// attachment detached when the entry holding it is released — buffer release, owner teardown, removal, a move or an
// eviction, whichever comes first.
namespace DmaBuf;

/// <summary>
/// A device mapping kept as buffer-owned state: the thread's "IOMMU mapping as metadata", in a standard form any
/// importer or cache can store. Valid until <see cref="IsReleased"/>.
/// </summary>
public sealed class CachedMapping : IBufferOwnedState
{
    private int _released;

    private CachedMapping(DmaBufAttachment attachment, ScatterTable table, DmaDirection direction)
    {
        Attachment = attachment;
        Table = table;
        Direction = direction;
    }

    /// <summary>The buffer-owned attachment the mapping was made through.</summary>
    public DmaBufAttachment Attachment { get; }

    /// <summary>Device addresses.</summary>
    public ScatterTable Table { get; }

    /// <summary>Direction it was mapped with.</summary>
    public DmaDirection Direction { get; }

    /// <summary>Bytes the mapping covers.</summary>
    public long Bytes => (long)Table.TotalLength;

    /// <summary>Whether the mapping was torn down.</summary>
    public bool IsReleased => Volatile.Read(ref _released) != 0;

    /// <summary>Maps <paramref name="buffer"/> for <paramref name="device"/> through a buffer-owned attachment.</summary>
    internal static CachedMapping Create(DmaBuffer buffer, IDmaDevice device, DmaDirection direction)
    {
        DmaBufAttachment attachment = DmaBufAttachment.CreateOwnedByBuffer(buffer, device, importer: null);
        try
        {
            return new CachedMapping(attachment, attachment.Map(direction), direction);
        }
        catch
        {
            attachment.Dispose();
            throw;
        }
    }

    void IBufferOwnedState.RevokeLocked() => Attachment.RevokeLocked();

    /// <summary>Unmaps and detaches. Runs once.</summary>
    internal void Release()
    {
        if (Interlocked.Exchange(ref _released, 1) == 0)
        {
            Attachment.Dispose();
        }
    }
}

/// <summary>Buffer-metadata helpers for the common case: a device mapping kept on the buffer.</summary>
public static class CachedMappingExtensions
{
    /// <summary>
    /// Returns the mapping of the buffer for <paramref name="device"/> stored under (<paramref name="key"/>,
    /// <paramref name="owner"/>), mapping it on first use. The mapping is released with the entry: on buffer release,
    /// owner teardown, removal or a move.
    /// </summary>
    /// <param name="metadata">The buffer's metadata.</param>
    /// <param name="key">Key (placement-dependent keys are dropped on a move).</param>
    /// <param name="owner">Owner of the entry.</param>
    /// <param name="device">Device to map for.</param>
    /// <param name="direction">Direction of the mapping.</param>
    /// <param name="created">Whether this call made the mapping.</param>
    public static CachedMapping GetOrAddMapping(
        this BufferMetadata metadata, MetadataKey<CachedMapping> key, MetadataOwner owner, IDmaDevice device, DmaDirection direction, out bool created)
    {
        ArgumentNullException.ThrowIfNull(metadata);
        if (metadata.TryGet(key, owner, out CachedMapping? existing))
        {
            created = false;
            return existing;
        }

        // The miss lives in its own method: its closure would otherwise be allocated on every hit too.
        return AddMapping(metadata, key, owner, device, direction, out created);
    }

    private static CachedMapping AddMapping(
        BufferMetadata metadata, MetadataKey<CachedMapping> key, MetadataOwner owner, IDmaDevice device, DmaDirection direction, out bool created)
    {
        bool made = false;
        CachedMapping m = metadata.GetOrAdd(
            key,
            owner,
            buffer =>
            {
                made = true;
                return CachedMapping.Create(buffer, device, direction);
            },
            static (mapping, _) => mapping.Release());
        created = made;
        return m;
    }
}

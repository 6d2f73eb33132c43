// Ownership: an ImportedBuffer belongs to its buffer (it is a metadata entry there) and to its ImportContext. A use
// (ImportContext.Import .. Dispose) keeps it from eviction; it never keeps the buffer alive. In per-address-space mode a
// use also holds the shared mapping it mapped, so that mapping cannot be evicted under it.
namespace DmaBuf;

/// <summary>
/// A buffer imported into an <see cref="ImportContext"/> (what a GEM object is to a PRIME import). The same object is
/// returned on every import of the same buffer while cached. Dispose ends one use; the import stays cached until its
/// buffer is released, the context is disposed, the buffer moves, or the budget evicts it (never while in use).
/// </summary>
public sealed class ImportedBuffer : IDisposable, ICachedItem
{
    private readonly ImportContext _context;
    private readonly object _gate = new();
    private SharedMapping? _shared; // held by the current uses; guarded by _gate

    internal ImportedBuffer(ImportContext context, DmaBuffer buffer, DmaBufAttachment attachment)
    {
        _context = context;
        Buffer = buffer;
        Attachment = attachment;
        Slot = new CacheSlot(this, inUse: true);
    }

    /// <summary>The imported buffer; null once released.</summary>
    public DmaBuffer? Buffer { get; private set; }

    /// <summary>The buffer-owned attachment of the import.</summary>
    public DmaBufAttachment Attachment { get; }

    /// <summary>Whether the import was released (its buffer went, it was evicted, invalidated or its context disposed).</summary>
    public bool IsReleased => Slot.IsReleased;

    /// <summary>Uses begun by <see cref="ImportContext.Import"/> and not yet ended.</summary>
    public int Uses => Slot.Uses;

    internal CacheSlot Slot { get; }

    CacheSlot ICachedItem.Slot => Slot;

    /// <summary>
    /// Device addresses of the buffer for the context's device, from the cache when it has them. Valid while this use
    /// lasts, unless the buffer moves or is released.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The import was released, or the buffer moved or went meanwhile.</exception>
    /// <exception cref="InvalidOperationException">No use is open: every <see cref="ImportContext.Import"/> was disposed.</exception>
    public ScatterTable Map(DmaDirection direction)
    {
        ObjectDisposedException.ThrowIf(IsReleased, this);
        if (!Slot.InUse)
        {
            throw new InvalidOperationException(
                $"{this}: Map after its use ended; call ImportContext.Import again to begin a use (an import not in use may be evicted at any time).");
        }

        return _context.SharedMappings is { } shared ? MapShared(shared) : _context.MapPerAttachment(this, direction);
    }

    /// <summary>Ends one use.</summary>
    /// <exception cref="InvalidOperationException">Disposed more often than imported.</exception>
    public void Dispose()
    {
        SharedMapping? unpin = null;
        lock (_gate)
        {
            if (Slot.EndUse() == 0)
            {
                unpin = _shared;
                _shared = null;
            }
        }

        if (unpin is not null)
        {
            _context.SharedMappings!.Release(unpin);
        }

        _context.OnUseEnded(this);
    }

    /// <inheritdoc/>
    public override string ToString() => $"import of {Buffer?.ToString() ?? "a released buffer"} by {_context.Name}";

    void IBufferOwnedState.RevokeLocked()
    {
        Slot.RevokeLocked();
        Attachment.RevokeLocked();
    }

    internal void ReleaseFromEntry(MetadataReleaseReason reason)
    {
        if (!Slot.TryMarkReleased())
        {
            return;
        }

        _context.Forget(this);
        SharedMapping? unpin;
        lock (_gate)
        {
            unpin = _shared;
            _shared = null;
        }

        try
        {
            if (unpin is not null)
            {
                _context.SharedMappings!.Release(unpin);
            }
        }
        finally
        {
            Attachment.Dispose();
            Buffer = null;
        }
    }

    private ScatterTable MapShared(SharedMappingCache shared)
    {
        lock (_gate)
        {
            if (_shared is { IsReleased: false } held)
            {
                _context.CountSharedMap(created: false);
                return held.Table;
            }
        }

        DmaBuffer buffer = Buffer ?? throw new ObjectDisposedException(ToString(), "The import was released.");
        SharedMapping acquired = shared.Acquire(buffer, _context.Device, out bool created);
        _context.CountSharedMap(created);
        SharedMapping? unpin;
        lock (_gate)
        {
            if (_shared is { IsReleased: false } winner)
            {
                unpin = acquired; // a concurrent Map of this use got there first
                acquired = winner;
            }
            else if (Slot.InUse && !IsReleased)
            {
                unpin = _shared;
                _shared = acquired;
            }
            else
            {
                unpin = acquired; // the use ended or the import went meanwhile: hold nothing
            }
        }

        if (unpin is not null)
        {
            shared.Release(unpin);
        }

        return acquired.Table;
    }
}

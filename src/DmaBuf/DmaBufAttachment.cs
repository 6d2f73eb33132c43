// Ownership: an attachment holds one reference to its buffer from creation until Dispose (detach). Mappings it hands
// out belong to the attachment: Unmap gives one back; Dispose unmaps whatever the importer left mapped, then detaches,
// then drops the reference — last, and outside the buffer lock, because it may release the buffer.
using System.Diagnostics;

namespace DmaBuf;

/// <summary>
/// One device's attachment to one buffer (<c>struct dma_buf_attachment</c>): the device, the importer's private object
/// and the exporter's private object. Dispose it to detach.
/// </summary>
/// <remarks>
/// <para><b>Lifetime.</b> The attachment holds a reference to the buffer (rule 2). Disposing detaches: mappings still
/// outstanding are unmapped first, then <see cref="IDmaBufExporter.Detach"/> runs, then the reference is dropped.</para>
/// <para><b>Locking.</b> <see cref="Map"/> and <see cref="Unmap"/> take the buffer lock and call the exporter under it.</para>
/// </remarks>
public sealed class DmaBufAttachment : IDisposable
{
    private readonly List<LiveMapping> _mappings = [];
    private bool _detached;
    private bool _revoked;
    private int _pins;
    private LiveMapping? _cached;

    private DmaBufAttachment(DmaBuffer buffer, IDmaDevice device, object? importerPrivate, IDmaBufImporter? importer, bool holdsReference)
    {
        Buffer = buffer;
        Device = device;
        ImporterPrivate = importerPrivate;
        Importer = importer;
        HoldsReference = holdsReference;
    }

    /// <summary>
    /// The dynamic importer told of moves, or null for a static importer, whose mappings pin the buffer while they exist.
    /// </summary>
    public IDmaBufImporter? Importer { get; }

    /// <summary>
    /// Whether the attachment holds a reference to its buffer. Importers' attachments do (rule 2); attachments owned by a
    /// cache or metadata entry do not: they belong to the buffer and are released with it (rule 3).
    /// </summary>
    public bool HoldsReference { get; }

    /// <summary>Whether the buffer is pinned through this attachment (explicitly, or by a static importer's mapping).</summary>
    public bool IsPinned
    {
        get
        {
            using OrderedLock.Scope scope = Buffer.Lock.Enter();
            return IsPinnedLocked;
        }
    }

    internal bool IsPinnedLocked => _pins > 0 || (Importer is null && (_mappings.Count > 0 || _cached is not null) && HoldsReference);

    /// <summary>The buffer attached to.</summary>
    public DmaBuffer Buffer { get; }

    /// <summary>The importing device.</summary>
    public IDmaDevice Device { get; }

    /// <summary>The importer's private object (<c>importer_priv</c>).</summary>
    public object? ImporterPrivate { get; set; }

    /// <summary>The exporter's private object for this attachment (<c>priv</c>), set by <see cref="IDmaBufExporter.Attach"/>.</summary>
    public object? ExporterPrivate { get; set; }

    /// <summary>Whether the attachment was detached.</summary>
    public bool IsDetached
    {
        get
        {
            using OrderedLock.Scope scope = Buffer.Lock.Enter();
            return _detached;
        }
    }

    /// <summary>Number of mappings handed out and not yet unmapped.</summary>
    public int LiveMappingCount
    {
        get
        {
            using OrderedLock.Scope scope = Buffer.Lock.Enter();
            return _mappings.Count;
        }
    }

    internal int LiveMappingCountLocked => _mappings.Count;

    internal static DmaBufAttachment Create(DmaBuffer buffer, IDmaDevice device, object? importerPrivate, IDmaBufImporter? importer)
    {
        buffer.AddRef();
        var attachment = new DmaBufAttachment(buffer, device, importerPrivate, importer, holdsReference: true);
        try
        {
            using OrderedLock.Scope scope = buffer.Lock.Enter();
            buffer.ThrowIfNotLive();
            buffer.Exporter.Attach(attachment);
            buffer.AddAttachmentLocked(attachment);
        }
        catch
        {
            buffer.ReleaseRef();
            throw;
        }

        return attachment;
    }

    /// <summary>
    /// Attaches without taking a reference: for state that belongs to the buffer (a metadata entry or a cache) and is
    /// released by the buffer's own release, before the exporter frees the memory.
    /// </summary>
    internal static DmaBufAttachment CreateOwnedByBuffer(DmaBuffer buffer, IDmaDevice device, IDmaBufImporter? importer)
    {
        var attachment = new DmaBufAttachment(buffer, device, importerPrivate: null, importer, holdsReference: false);
        using OrderedLock.Scope scope = buffer.Lock.Enter();
        buffer.ThrowIfNotLive();
        buffer.Exporter.Attach(attachment);
        buffer.AddAttachmentLocked(attachment);
        return attachment;
    }

    /// <summary>
    /// Maps once and returns the same device addresses on later calls (the exporter-side per-attachment cache, as the
    /// kernel's <c>cache_sgt_mapping</c>). The cached mapping is unmapped at detach, or dropped when the buffer moves.
    /// </summary>
    /// <param name="direction">Direction; a later call with another direction remaps as <see cref="DmaDirection.Bidirectional"/>.</param>
    /// <param name="hit">Whether the cache answered.</param>
    /// <exception cref="ObjectDisposedException">The attachment was detached.</exception>
    public ScatterTable MapCached(DmaDirection direction, out bool hit)
    {
        ScatterTable table;
        using (OrderedLock.Scope scope = Buffer.Lock.Enter())
        {
            ThrowIfDetachedLocked();
            if (_cached is { } c && (c.Direction == direction || c.Direction == DmaDirection.Bidirectional))
            {
                hit = true;
                DmaBufMetrics.s_cacheHits.Add(1);
                return c.Table;
            }

            hit = false;
            if (_cached is { } old)
            {
                _cached = null;
                Buffer.Exporter.Unmap(this, old.Table, old.Direction);
                DmaBufMetrics.s_unmaps.Add(1);
                direction = DmaDirection.Bidirectional;
            }

            table = Buffer.Exporter.Map(this, direction);
            _cached = new LiveMapping(table, direction);
        }

        DmaBufMetrics.s_cacheMisses.Add(1);
        DmaBufMetrics.s_maps.Add(1);
        DmaBufMetrics.s_bytesMapped.Add((long)table.TotalLength);
        return table;
    }

    /// <summary>Whether a cached mapping from <see cref="MapCached"/> is held.</summary>
    public bool HasCachedMapping
    {
        get
        {
            using OrderedLock.Scope scope = Buffer.Lock.Enter();
            return _cached is not null;
        }
    }

    /// <summary>Pins the buffer in place for this attachment (<c>dma_buf_pin</c>): a pinned buffer cannot move.</summary>
    /// <exception cref="ObjectDisposedException">The attachment was detached.</exception>
    public void Pin()
    {
        using OrderedLock.Scope scope = Buffer.Lock.Enter();
        ThrowIfDetachedLocked();
        Buffer.Exporter.Pin(this);
        _pins++;
    }

    /// <summary>Undoes one <see cref="Pin"/>.</summary>
    /// <exception cref="InvalidOperationException">The attachment is not pinned.</exception>
    public void Unpin()
    {
        using OrderedLock.Scope scope = Buffer.Lock.Enter();
        if (_pins == 0)
        {
            throw new InvalidOperationException($"Unpin of {this} without a matching Pin.");
        }

        _pins--;
        Buffer.Exporter.Unpin(this);
    }

    /// <summary>
    /// The buffer moved (buffer lock held, relocation done): the cached mapping is unmapped. An attachment a cache owns is
    /// revoked as well and loses every mapping, since all it maps is the old placement; its entry is released next.
    /// Returns the cached mappings dropped.
    /// </summary>
    internal int InvalidateForMoveLocked()
    {
        int dropped = 0;
        if (!HoldsReference)
        {
            _revoked = true;
            for (int i = _mappings.Count - 1; i >= 0; i--)
            {
                LiveMapping m = _mappings[i];
                _mappings.RemoveAt(i);
                Buffer.Exporter.Unmap(this, m.Table, m.Direction);
                DmaBufMetrics.s_unmaps.Add(1);
            }
        }

        if (_cached is { } c)
        {
            _cached = null;
            Buffer.Exporter.Unmap(this, c.Table, c.Direction);
            DmaBufMetrics.s_unmaps.Add(1);
            dropped++;
        }

        return dropped;
    }

    /// <summary>
    /// Buffer lock held: the cache entry owning this attachment was taken off its buffer, so no new mapping may be made
    /// through it; what it has stays until the entry's release detaches it.
    /// </summary>
    internal void RevokeLocked()
    {
        Debug.Assert(Buffer.Lock.IsHeldByCurrentThread);
        _revoked = true;
    }

    /// <summary>
    /// Maps the buffer for the device (<c>dma_buf_map_attachment</c>) and returns the device addresses. Each call makes a
    /// new mapping that must be given back with <see cref="Unmap"/> (or is unmapped at detach).
    /// </summary>
    /// <exception cref="ObjectDisposedException">The attachment was detached.</exception>
    /// <exception cref="DmaMappingException">The exporter or the device's address space could not map the buffer.</exception>
    public ScatterTable Map(DmaDirection direction)
    {
        ScatterTable table;
        using (OrderedLock.Scope scope = Buffer.Lock.Enter())
        {
            ThrowIfDetachedLocked();
            table = Buffer.Exporter.Map(this, direction);
            _mappings.Add(new LiveMapping(table, direction));
            Buffer.AssertInvariantsLocked();
        }

        DmaBufMetrics.s_maps.Add(1);
        DmaBufMetrics.s_bytesMapped.Add((long)table.TotalLength);
        return table;
    }

    /// <summary>Unmaps a table returned by <see cref="Map"/> on this attachment (<c>dma_buf_unmap_attachment</c>).</summary>
    /// <exception cref="ArgumentException"><paramref name="table"/> is not a live mapping of this attachment.</exception>
    /// <exception cref="ObjectDisposedException">The attachment was detached.</exception>
    public void Unmap(ScatterTable table)
    {
        ArgumentNullException.ThrowIfNull(table);
        using (OrderedLock.Scope scope = Buffer.Lock.Enter())
        {
            ThrowIfDetachedLocked();
            int index = IndexOfLocked(table);
            if (index < 0)
            {
                throw new ArgumentException($"The table is not a live mapping of this attachment of {Buffer}.", nameof(table));
            }

            LiveMapping m = _mappings[index];
            _mappings.RemoveAt(index);
            Buffer.Exporter.Unmap(this, m.Table, m.Direction);
        }

        DmaBufMetrics.s_unmaps.Add(1);
    }

    /// <summary>
    /// Detaches (<c>dma_buf_detach</c>): unmaps what is still mapped, unpins, detaches, drops the reference. Idempotent.
    /// Every step runs even if an exporter operation throws: the attachment is gone afterwards either way.
    /// </summary>
    /// <exception cref="AggregateException">Exporter operations threw; the attachment was detached regardless.</exception>
    public void Dispose()
    {
        int unmapped = 0;
        bool finishRelease;
        List<Exception>? errors = null;
        using (OrderedLock.Scope scope = Buffer.Lock.Enter())
        {
            if (_detached)
            {
                return;
            }

            _detached = true;
            for (int i = _mappings.Count - 1; i >= 0; i--)
            {
                Try(ref errors, this, _mappings[i], static (a, m) => a.Buffer.Exporter.Unmap(a, m.Table, m.Direction));
                unmapped++;
            }

            _mappings.Clear();
            if (_cached is { } c)
            {
                _cached = null;
                Try(ref errors, this, c, static (a, m) => a.Buffer.Exporter.Unmap(a, m.Table, m.Direction));
                unmapped++;
            }

            while (_pins > 0)
            {
                _pins--;
                Try(ref errors, this, default, static (a, _) => a.Buffer.Exporter.Unpin(a));
            }

            Try(ref errors, this, default, static (a, _) => a.Buffer.Exporter.Detach(a));
            finishRelease = Buffer.RemoveAttachmentLocked(this);
        }

        if (unmapped > 0)
        {
            DmaBufMetrics.s_unmaps.Add(unmapped);
        }

        try
        {
            // The last attachment a cache owned, gone after the buffer's release began: the release's last step is ours.
            if (finishRelease)
            {
                Buffer.FinishRelease();
            }
        }
        finally
        {
            // Outside the lock: this may be the last reference, and release runs with no lock held (rule 5).
            if (HoldsReference)
            {
                Buffer.ReleaseRef();
            }
        }

        if (errors is not null)
        {
            throw new AggregateException($"Detaching {Device.Name} from {Buffer}: {errors.Count} exporter operation(s) failed; the attachment was detached regardless.", errors);
        }
    }

    private static void Try(ref List<Exception>? errors, DmaBufAttachment a, LiveMapping m, Action<DmaBufAttachment, LiveMapping> step)
    {
        try
        {
            step(a, m);
        }
        catch (Exception ex)
        {
            (errors ??= []).Add(ex);
        }
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Device.Name} attached to {Buffer}";

    private int IndexOfLocked(ScatterTable table)
    {
        for (int i = 0; i < _mappings.Count; i++)
        {
            if (ReferenceEquals(_mappings[i].Table, table))
            {
                return i;
            }
        }

        return -1;
    }

    private void ThrowIfDetachedLocked()
    {
        Debug.Assert(Buffer.Lock.IsHeldByCurrentThread);
        ObjectDisposedException.ThrowIf(_detached, this);
        if (_revoked)
        {
            throw new ObjectDisposedException(ToString(), "The cache entry behind this attachment was released or its buffer moved; import or map again.");
        }
    }

    private readonly record struct LiveMapping(ScatterTable Table, DmaDirection Direction);
}

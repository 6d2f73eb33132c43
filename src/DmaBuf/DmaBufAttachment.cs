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

    private DmaBufAttachment(DmaBuffer buffer, IDmaDevice device, object? importerPrivate)
    {
        Buffer = buffer;
        Device = device;
        ImporterPrivate = importerPrivate;
    }

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

    internal static DmaBufAttachment Create(DmaBuffer buffer, IDmaDevice device, object? importerPrivate)
    {
        buffer.AddRef();
        var attachment = new DmaBufAttachment(buffer, device, importerPrivate);
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

    /// <summary>Detaches (<c>dma_buf_detach</c>): unmaps what is still mapped, detaches, drops the reference. Idempotent.</summary>
    public void Dispose()
    {
        int unmapped = 0;
        using (OrderedLock.Scope scope = Buffer.Lock.Enter())
        {
            if (_detached)
            {
                return;
            }

            _detached = true;
            for (int i = _mappings.Count - 1; i >= 0; i--)
            {
                Buffer.Exporter.Unmap(this, _mappings[i].Table, _mappings[i].Direction);
                unmapped++;
            }

            _mappings.Clear();
            Buffer.Exporter.Detach(this);
            Buffer.RemoveAttachmentLocked(this);
        }

        if (unmapped > 0)
        {
            DmaBufMetrics.s_unmaps.Add(unmapped);
        }

        // Outside the lock: this may be the last reference, and release runs with no lock held (rule 5).
        Buffer.ReleaseRef();
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
    }

    private readonly record struct LiveMapping(ScatterTable Table, DmaDirection Direction);
}

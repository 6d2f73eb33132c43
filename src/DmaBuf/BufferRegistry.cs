using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace DmaBuf;

/// <summary>One live buffer as a listing shows it (a line of debugfs <c>dma_buf/bufinfo</c>).</summary>
/// <param name="Id">The buffer's id.</param>
/// <param name="Name">Its debug name, if any.</param>
/// <param name="Size">Size in bytes.</param>
/// <param name="Exporter">Exporter name.</param>
/// <param name="ReferenceCount">References at the time of the listing.</param>
/// <param name="AttachedDevices">Names of the attached devices, one per attachment.</param>
/// <param name="Mappings">Mappings outstanding over all attachments.</param>
public sealed record BufferInfo(
    long Id, string? Name, long Size, string Exporter, int ReferenceCount, IReadOnlyList<string> AttachedDevices, int Mappings)
{
    /// <summary>Unsignaled fences in the buffer's reservation object at the time of the listing.</summary>
    public int Fences { get; init; }
}

/// <summary>
/// Every live buffer of one context, listable like debugfs <c>dma_buf/bufinfo</c>. A buffer joins at export and leaves
/// when its release starts, so a listing never shows a released buffer; the registry holds no references, so listing
/// never keeps a buffer alive.
/// </summary>
/// <remarks>Lock order: the registry lock is taken before any buffer lock, never inside one (rule 9).</remarks>
public sealed class BufferRegistry
{
    private readonly OrderedLock _lock;
    private readonly Dictionary<long, DmaBuffer> _live = [];

    /// <summary>Creates an empty registry.</summary>
    public BufferRegistry(string name = "registry")
    {
        Name = name;
        _lock = new OrderedLock(LockLevel.Registry, name);
    }

    /// <summary>The process-wide registry used when an export names none.</summary>
    public static BufferRegistry Default { get; } = new("default registry");

    /// <summary>Registry name.</summary>
    public string Name { get; }

    /// <summary>Number of live buffers.</summary>
    public int Count
    {
        get
        {
            using OrderedLock.Scope scope = _lock.Enter();
            return _live.Count;
        }
    }

    /// <summary>Whether a buffer with <paramref name="id"/> is live here.</summary>
    public bool Contains(long id)
    {
        using OrderedLock.Scope scope = _lock.Enter();
        return _live.ContainsKey(id);
    }

    /// <summary>Lists the live buffers, ordered by id.</summary>
    public IReadOnlyList<BufferInfo> List()
    {
        using OrderedLock.Scope scope = _lock.Enter();
        var result = new List<BufferInfo>(_live.Count);
        var devices = new List<string>();
        foreach (DmaBuffer buffer in _live.Values)
        {
            using OrderedLock.Scope bufferScope = buffer.Lock.Enter();
            if (buffer.State != DmaBufState.Live)
            {
                continue;
            }

            devices.Clear();
            buffer.SnapshotLocked(devices, out int mappings);
            result.Add(new BufferInfo(
                buffer.Id, buffer.Name, buffer.Size, buffer.ExporterName, buffer.ReferenceCount, [.. devices], mappings)
            {
                Fences = buffer.Resv.Count,
            });
        }

        result.Sort((a, b) => a.Id.CompareTo(b.Id));
        return result;
    }

    /// <summary>The listing as text, in the spirit of debugfs <c>dma_buf/bufinfo</c>.</summary>
    public string FormatBufInfo()
    {
        IReadOnlyList<BufferInfo> buffers = List();
        var sb = new StringBuilder();
        CultureInfo c = CultureInfo.InvariantCulture;
        sb.AppendLine("Dma-buf Objects:");
        sb.AppendLine(c, $"{"id",-8} {"size",-12} {"count",-6} {"exp_name",-16} {"maps",-5} {"fences",-6} name");
        long bytes = 0;
        int attached = 0;
        foreach (BufferInfo b in buffers)
        {
            sb.AppendLine(c, $"{b.Id,-8} {b.Size,-12} {b.ReferenceCount,-6} {b.Exporter,-16} {b.Mappings,-5} {b.Fences,-6} {b.Name ?? "<none>"}");
            if (b.AttachedDevices.Count > 0)
            {
                sb.AppendLine("\tAttached Devices:");
                foreach (string d in b.AttachedDevices)
                {
                    sb.AppendLine(c, $"\t{d}");
                }

                sb.AppendLine(c, $"Total {b.AttachedDevices.Count} devices attached");
            }

            attached += b.AttachedDevices.Count;
            bytes += b.Size;
        }

        sb.AppendLine();
        sb.AppendLine(c, $"Total {buffers.Count} objects, {bytes} bytes, {attached} attachments");
        return sb.ToString();
    }

    internal void Add(DmaBuffer buffer)
    {
        using OrderedLock.Scope scope = _lock.Enter();
        _live.Add(buffer.Id, buffer);
        AssertInvariantsLocked(buffer);
    }

    internal void Remove(DmaBuffer buffer)
    {
        using OrderedLock.Scope scope = _lock.Enter();
        bool removed = _live.Remove(buffer.Id);
        Debug.Assert(removed, "a buffer leaves its registry once, at the start of its release");
        using OrderedLock.Scope bufferScope = buffer.Lock.Enter();
        buffer.MarkReleasingLocked();
        AssertInvariantsLocked(buffer);
    }

    // Checks the buffer just changed, not the whole table: the registry may list tens of thousands of buffers.
    [Conditional("DEBUG")]
    private void AssertInvariantsLocked(DmaBuffer changed)
    {
        Debug.Assert(_lock.IsHeldByCurrentThread);
        bool listed = _live.TryGetValue(changed.Id, out DmaBuffer? found);
        if (listed && (!ReferenceEquals(found, changed) || changed.State != DmaBufState.Live))
        {
            throw new InvalidOperationException($"Registry '{Name}' lists id {changed.Id} as {found}, which is {found?.State}.");
        }

        if (!listed && changed.State == DmaBufState.Live && changed.ReferenceCount > 0)
        {
            throw new InvalidOperationException($"Registry '{Name}' lost live {changed}.");
        }
    }
}

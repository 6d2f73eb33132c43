namespace DmaBuf.Linux;

/// <summary>
/// Buffers from a dma-buf heap (<c>/dev/dma_heap/&lt;name&gt;</c>, <c>DMA_HEAP_IOCTL_ALLOC</c>): real dma-bufs that a
/// kernel driver could import. The heap node is opened at construction; buffers outlive the exporter.
/// </summary>
public sealed class DmaHeapExporter : LinuxExporter, IDisposable
{
    private readonly SafeFdHandle _heap;

    /// <summary>Opens heap <paramref name="heapName"/>.</summary>
    /// <param name="heapName">The heap, e.g. <c>system</c>.</param>
    /// <param name="cache">The mmap cache to map through; <see cref="MmapCache.Shared"/> when null.</param>
    /// <param name="registry">The registry to list buffers in; <see cref="BufferRegistry.Default"/> when null.</param>
    /// <param name="features">What the machine has; probed when null.</param>
    /// <exception cref="FeatureNotAvailableException">The heap's node does not exist.</exception>
    /// <exception cref="LinuxErrorException">The node exists but cannot be opened (permissions).</exception>
    public DmaHeapExporter(string heapName = "system", MmapCache? cache = null, BufferRegistry? registry = null, LinuxFeatures? features = null)
        : base(cache, registry)
    {
        features ??= LinuxFeatures.Probe();
        features.RequireDmaHeap(heapName);
        HeapName = heapName;
        Name = "dma-heap:" + heapName; // one string: buffers carry the exporter's name as given at export
        _heap = Interop.Libc.OpenReadWrite(features.DmaHeapNode(heapName));
    }

    /// <summary>The heap's name.</summary>
    public string HeapName { get; }

    /// <inheritdoc/>
    public override string Name { get; }

    /// <inheritdoc/>
    public override unsafe DmaBufHandle Allocate(long size, string? name = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(size);
        DmaBuffer.ValidateName(name);
        ObjectDisposedException.ThrowIf(_heap.IsClosed, this);
        var data = new Interop.Libc.dma_heap_allocation_data
        {
            len = (ulong)size,
            fd_flags = Interop.Libc.O_RDWR | Interop.Libc.O_CLOEXEC,
        };
        Interop.Libc.Ioctl(_heap, Interop.Libc.DMA_HEAP_IOCTL_ALLOC, &data, "ioctl(DMA_HEAP_IOCTL_ALLOC)");
        var fd = new SafeFdHandle((int)data.fd);
        return ExportDmaBuf(fd, size, name);
    }

    /// <summary>Closes the heap node. Buffers already allocated stay valid.</summary>
    public void Dispose() => _heap.Dispose();
}

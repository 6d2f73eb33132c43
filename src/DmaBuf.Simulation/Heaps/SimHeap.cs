// Ownership: a heap allocation is a DmaBuffer whose ExporterPrivate is a HeapAllocation. From the moment Export
// succeeds the buffer owns the pages: Allocate's own failure path only disposes the handle (rule 7), and the pages go
// back to PhysicalMemory in Release and nowhere else.

namespace DmaBuf.Simulation;

/// <summary>
/// The backing store of one heap buffer: its physical runs and the blocks to give back. A movable heap swaps the
/// placement under the buffer lock; everyone else reads it under that lock (exporter Map) or while holding a reference.
/// </summary>
public sealed class HeapAllocation
{
    private Placement _current;

    internal HeapAllocation(ScatterTable physical, (ulong Pfn, long Pages, int Order)[] blocks) =>
        _current = new Placement(physical, blocks);

    /// <summary>The heap that allocated it; set once, when its buffer is exported.</summary>
    internal SimHeap? Heap { get; set; }

    /// <summary>The physical runs, in buffer order (one per allocated chunk).</summary>
    public ScatterTable Physical => Volatile.Read(ref _current).Physical;

    /// <summary>How many times the buffer moved.</summary>
    public int Moves { get; private set; }

    internal (ulong Pfn, long Pages, int Order)[] Blocks => Volatile.Read(ref _current).Blocks;

    /// <summary>Installs a new placement; returns the old one. Buffer lock held.</summary>
    internal Placement Swap(Placement next)
    {
        Placement old = _current;
        Volatile.Write(ref _current, next);
        Moves++;
        return old;
    }

    internal sealed record Placement(ScatterTable Physical, (ulong Pfn, long Pages, int Order)[] Blocks);
}

/// <summary>
/// An exporter over simulated physical memory, the way a dma-buf heap is: it allocates pages, exports them as a
/// buffer, maps them through each importer's address space and frees them on release.
/// </summary>
/// <remarks>
/// Map and Unmap delegate to the attachment's device address space (the framework never computes addresses).
/// <see cref="Vmap"/> gives a CPU view with checked access, so a CPU touch of freed memory is counted.
/// </remarks>
public abstract class SimHeap : IDmaBufExporter
{
    private long _liveBuffers;
    private long _releases;
    private IDmaBufExporter _exportAs;

    /// <summary>Creates a heap over <paramref name="memory"/>; CPU access goes through <paramref name="cpuCache"/>.</summary>
    protected SimHeap(PhysicalMemory memory, BufferRegistry registry, CpuCache? cpuCache = null)
    {
        Memory = memory;
        Registry = registry;
        CpuCache = cpuCache ?? new CpuCache(memory);
        _exportAs = this;
    }

    /// <summary>
    /// The exporter new buffers are exported with (<see cref="DmaBuffer.Exporter"/>): the heap itself, or a decorator
    /// that forwards every operation to it (fault injection, tracing). The heap recognises its buffers by their
    /// <see cref="HeapAllocation"/>, so a decorator sees every call the framework makes. Buffers already exported keep
    /// the exporter they were exported with.
    /// </summary>
    public IDmaBufExporter ExportAs
    {
        get => Volatile.Read(ref _exportAs);
        set => Volatile.Write(ref _exportAs, value ?? throw new ArgumentNullException(nameof(value)));
    }

    /// <summary>The CPU cache CPU views go through.</summary>
    public CpuCache CpuCache { get; }

    /// <summary>
    /// When true, begin/end of CPU access do no cache maintenance (the <c>--no-sync</c> experiment): CPU writes stay in the
    /// cache and devices read what memory held before.
    /// </summary>
    public bool SkipCacheMaintenance { get; set; }

    /// <inheritdoc/>
    public abstract string Name { get; }

    /// <summary>The memory the heap allocates from.</summary>
    public PhysicalMemory Memory { get; }

    /// <summary>The registry its buffers are listed in.</summary>
    public BufferRegistry Registry { get; }

    /// <summary>Buffers allocated and not yet released.</summary>
    public long LiveBuffers => Interlocked.Read(ref _liveBuffers);

    /// <summary>Releases run so far.</summary>
    public long Releases => Interlocked.Read(ref _releases);

    /// <summary>
    /// Allocates <paramref name="size"/> bytes (rounded up to whole pages) and exports them as a buffer
    /// (<c>DMA_HEAP_IOCTL_ALLOC</c>).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Size is not positive.</exception>
    /// <exception cref="ArgumentException">The name is invalid; nothing stays allocated.</exception>
    /// <exception cref="OutOfMemoryException">The simulated memory has no room.</exception>
    public DmaBufHandle Allocate(long size, string? name = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(size);
        long pages = (size + PhysicalMemory.PageSize - 1) >> PhysicalMemory.PageShift;
        HeapAllocation allocation = AllocatePages(pages);
        allocation.Heap = this;
        DmaBufHandle handle;
        try
        {
            handle = DmaBuffer.Export(new DmaBufExportInfo
            {
                Exporter = ExportAs,
                Size = pages << PhysicalMemory.PageShift,
                ExporterPrivate = allocation,
                Registry = Registry,
            });
        }
        catch
        {
            // Export failed, so it took nothing over: the pages are still ours to free.
            FreePages(allocation);
            throw;
        }

        Interlocked.Increment(ref _liveBuffers);
        try
        {
            // A step after export. From here on a failure may only drop the reference (rule 7).
            handle.Buffer.Name = name;
        }
        catch
        {
            handle.Dispose();
            throw;
        }

        return handle;
    }

    /// <summary>The backing store of a buffer this heap exported.</summary>
    /// <exception cref="ArgumentException">The buffer is not from this heap.</exception>
    public HeapAllocation AllocationOf(DmaBuffer buffer)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        if (buffer.ExporterPrivate is not HeapAllocation a || !ReferenceEquals(a.Heap, this))
        {
            throw new ArgumentException($"{buffer} was not exported by heap '{Name}'.", nameof(buffer));
        }

        return a;
    }

    /// <inheritdoc/>
    public ScatterTable Map(DmaBufAttachment attachment, DmaDirection direction) =>
        attachment.Device.AddressSpace.Map(AllocationOf(attachment.Buffer).Physical, direction);

    /// <inheritdoc/>
    public void Unmap(DmaBufAttachment attachment, ScatterTable table, DmaDirection direction) =>
        attachment.Device.AddressSpace.Unmap(table, direction);

    /// <summary>
    /// Invalidates the buffer's CPU cache lines, so the CPU sees what devices wrote — for writes too, because a partial
    /// write into a stale line would write old device data back with it.
    /// </summary>
    public void BeginCpuAccess(DmaBuffer buffer, CpuAccess access)
    {
        if (!SkipCacheMaintenance)
        {
            CpuCache.Invalidate(AllocationOf(buffer).Physical);
        }
    }

    /// <summary>Cleans the CPU cache after writes, so devices see what the CPU wrote.</summary>
    public void EndCpuAccess(DmaBuffer buffer, CpuAccess access)
    {
        if (!SkipCacheMaintenance && (access & CpuAccess.Write) != 0)
        {
            CpuCache.Clean(AllocationOf(buffer).Physical);
        }
    }

    /// <inheritdoc/>
    public void Release(DmaBuffer buffer)
    {
        CpuCache.Discard(AllocationOf(buffer).Physical);
        FreePages(AllocationOf(buffer));
        Interlocked.Decrement(ref _liveBuffers);
        Interlocked.Increment(ref _releases);
    }

    /// <inheritdoc/>
    public IDmaBufCpuView Vmap(DmaBuffer buffer) => new CpuView(CpuCache, AllocationOf(buffer), buffer.Size);

    /// <summary>Allocates <paramref name="pages"/> pages; throws <see cref="OutOfMemoryException"/> leaving nothing allocated.</summary>
    private protected abstract HeapAllocation AllocatePages(long pages);

    /// <summary>Gives the pages of an allocation back.</summary>
    private protected void FreePages(HeapAllocation allocation) => FreeBlocks(allocation.Blocks);

    /// <summary>Gives blocks back: buddy blocks by order, contiguous runs (order -1) to the contiguous region.</summary>
    private protected void FreeBlocks((ulong Pfn, long Pages, int Order)[] blocks)
    {
        foreach ((ulong pfn, long pages, int order) in blocks)
        {
            if (order >= 0)
            {
                Memory.Free(pfn, order);
            }
            else
            {
                Memory.FreeContiguous(pfn, pages);
            }
        }
    }

    /// <summary>A CPU view: through the CPU cache, then checked physical access. Follows the buffer if it moves.</summary>
    private sealed class CpuView(CpuCache memory, HeapAllocation allocation, long length) : IDmaBufCpuView
    {
        public long Length => length;

        public void Read(long offset, Span<byte> destination)
        {
            foreach ((ulong pa, int start, int count) in Pieces(offset, destination.Length))
            {
                memory.Read(pa, destination.Slice(start, count));
            }
        }

        public void Write(long offset, ReadOnlySpan<byte> source)
        {
            foreach ((ulong pa, int start, int count) in Pieces(offset, source.Length))
            {
                memory.Write(pa, source.Slice(start, count));
            }
        }

        public void Dispose()
        {
        }

        // Splits [offset, offset+count) of the buffer into physical pieces.
        private List<(ulong Pa, int Start, int Count)> Pieces(long offset, int count)
        {
            if (offset < 0 || offset + count > length)
            {
                throw new ArgumentOutOfRangeException(nameof(offset), $"Range {offset}+{count} is outside the buffer of {length} bytes.");
            }

            var pieces = new List<(ulong, int, int)>();
            int start = 0;
            foreach (ScatterSegment run in allocation.Physical.GetRange((ulong)offset, (ulong)count))
            {
                pieces.Add((run.Address, start, (int)run.Length));
                start += (int)run.Length;
            }

            return pieces;
        }
    }
}

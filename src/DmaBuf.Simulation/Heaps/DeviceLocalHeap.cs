namespace DmaBuf.Simulation;

/// <summary>
/// A dynamic exporter over device-local memory (a GPU's VRAM, modelled by the contiguous region): it can move a buffer
/// out to scattered system memory (eviction) or to another place in device memory (compaction). A move notifies
/// importers through <see cref="DmaBuffer.Move"/>: every cached mapping and placement-dependent metadata entry is
/// invalidated and rebuilt on next use; a pinned attachment blocks the move.
/// </summary>
public sealed class DeviceLocalHeap : SimHeap
{
    private static readonly int[] s_orders = [8, 4, 0];

    /// <summary>Creates the heap.</summary>
    public DeviceLocalHeap(PhysicalMemory memory, BufferRegistry registry, CpuCache? cpuCache = null) : base(memory, registry, cpuCache) { }

    /// <inheritdoc/>
    public override string Name => "device-local";

    /// <summary>Moves the buffer out of device memory into scattered system pages, copying its bytes.</summary>
    /// <returns>Cached mappings and metadata entries invalidated.</returns>
    /// <exception cref="InvalidOperationException">An attachment pins the buffer.</exception>
    /// <exception cref="OutOfMemoryException">No system memory for the new placement.</exception>
    public int Evict(DmaBufHandle handle) => Move(handle, toDeviceMemory: false);

    /// <summary>Moves the buffer to a fresh place in device memory (compaction), copying its bytes.</summary>
    /// <returns>Cached mappings and metadata entries invalidated.</returns>
    /// <exception cref="InvalidOperationException">An attachment pins the buffer.</exception>
    /// <exception cref="OutOfMemoryException">No device memory for the new placement.</exception>
    public int Compact(DmaBufHandle handle) => Move(handle, toDeviceMemory: true);

    private protected override HeapAllocation AllocatePages(long pages)
    {
        if (!Memory.TryAllocateContiguous(pages, out ulong pfn))
        {
            throw new OutOfMemoryException($"Device-local heap: no free run of {pages} pages.");
        }

        return new HeapAllocation(
            ScatterTable.Single(pfn << PhysicalMemory.PageShift, (ulong)pages << PhysicalMemory.PageShift), [(pfn, pages, -1)]);
    }

    private int Move(DmaBufHandle handle, bool toDeviceMemory)
    {
        DmaBuffer buffer = handle.Buffer;
        HeapAllocation allocation = AllocationOf(buffer);
        long pages = buffer.Size >> PhysicalMemory.PageShift;
        return buffer.Move(_ =>
        {
            // All or nothing: if the new placement cannot be had, nothing has changed yet.
            HeapAllocation.Placement next = toDeviceMemory ? AllocateContiguousPlacement(pages) : AllocateScatteredPlacement(pages);

            // The copy engine reads memory, not the CPU cache: write back what the CPU wrote so it moves with the buffer,
            // then drop the old placement's lines so none of them serves or overwrites the pages' next owner.
            CpuCache.Clean(allocation.Physical);
            Copy(allocation.Physical, next.Physical);
            HeapAllocation.Placement old = allocation.Swap(next);
            CpuCache.Discard(old.Physical);

            // Runs after every importer let go of the old placement.
            return () => FreeBlocks(old.Blocks);
        });
    }

    private HeapAllocation.Placement AllocateContiguousPlacement(long pages)
    {
        if (!Memory.TryAllocateContiguous(pages, out ulong pfn))
        {
            throw new OutOfMemoryException($"Device-local heap: no free run of {pages} pages to compact into.");
        }

        return new(ScatterTable.Single(pfn << PhysicalMemory.PageShift, (ulong)pages << PhysicalMemory.PageShift), [(pfn, pages, -1)]);
    }

    private HeapAllocation.Placement AllocateScatteredPlacement(long pages)
    {
        var blocks = new List<(ulong Pfn, long Pages, int Order)>();
        long left = pages;
        while (left > 0)
        {
            int order = s_orders.First(o => (1L << o) <= left);
            if (!Memory.TryAllocate(order, out ulong pfn) && !(order > 0 && Memory.TryAllocate(order = 0, out pfn)))
            {
                FreeBlocks([.. blocks]);
                throw new OutOfMemoryException($"Device-local heap: no system memory to evict {pages} pages into.");
            }

            blocks.Add((pfn, 1L << order, order));
            left -= 1L << order;
        }

        ScatterSegment[] segments = [.. blocks.Select(b => new ScatterSegment(b.Pfn << PhysicalMemory.PageShift, (ulong)b.Pages << PhysicalMemory.PageShift))];
        return new(ScatterTable.FromOwnedArray(segments), [.. blocks]);
    }

    private void Copy(ScatterTable from, ScatterTable to)
    {
        // The copy engine moves whole pages; both tables cover the same number of pages.
        ulong fromPage = 0, toPage = 0;
        int fi = 0, ti = 0;
        ReadOnlySpan<ScatterSegment> f = from.Segments, t = to.Segments;
        while (fi < f.Length && ti < t.Length)
        {
            ulong src = (f[fi].Address >> PhysicalMemory.PageShift) + fromPage;
            ulong dst = (t[ti].Address >> PhysicalMemory.PageShift) + toPage;
            Memory.PageBytes(src).CopyTo(Memory.PageBytes(dst));
            if (++fromPage == f[fi].Length >> PhysicalMemory.PageShift)
            {
                fi++;
                fromPage = 0;
            }

            if (++toPage == t[ti].Length >> PhysicalMemory.PageShift)
            {
                ti++;
                toPage = 0;
            }
        }
    }
}

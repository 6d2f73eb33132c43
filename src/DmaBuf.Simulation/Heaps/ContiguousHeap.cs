namespace DmaBuf.Simulation;

/// <summary>
/// A physically contiguous heap (CMA-like, as Linux's <c>cma_heap.c</c>): every buffer is one run, so an IOMMU can map it
/// with 2 MiB blocks where the addresses align, and a device without an IOMMU can use it directly.
/// </summary>
public sealed class ContiguousHeap : SimHeap
{
    /// <summary>Creates the heap over the memory's contiguous region.</summary>
    public ContiguousHeap(PhysicalMemory memory, BufferRegistry registry, CpuCache? cpuCache = null) : base(memory, registry, cpuCache) { }

    /// <inheritdoc/>
    public override string Name => "contiguous";

    private protected override HeapAllocation AllocatePages(long pages)
    {
        if (!Memory.TryAllocateContiguous(pages, out ulong pfn))
        {
            throw new OutOfMemoryException($"Contiguous heap: no free run of {pages} pages.");
        }

        return new HeapAllocation(
            ScatterTable.Single(pfn << PhysicalMemory.PageShift, (ulong)pages << PhysicalMemory.PageShift),
            [(pfn, pages, -1)]);
    }
}

namespace DmaBuf.Simulation;

/// <summary>
/// The system heap: scattered pages in chunks of order 8, 4 and 0 (1 MiB, 64 KiB, 4 KiB), as Linux's
/// <c>drivers/dma-buf/heaps/system_heap.c</c> allocates them: the largest chunk that fits what is left, falling back
/// to smaller orders when a large one cannot be had.
/// </summary>
public sealed class SystemHeap : SimHeap
{
    private static readonly int[] s_orders = [8, 4, 0];

    /// <summary>Creates the heap.</summary>
    public SystemHeap(PhysicalMemory memory, BufferRegistry registry, CpuCache? cpuCache = null) : base(memory, registry, cpuCache) { }

    /// <inheritdoc/>
    public override string Name => "system";

    private protected override HeapAllocation AllocatePages(long pages)
    {
        var blocks = new List<(ulong Pfn, long Pages, int Order)>();
        long left = pages;
        int maxOrderIndex = 0;
        while (left > 0)
        {
            bool got = false;
            for (int i = maxOrderIndex; i < s_orders.Length; i++)
            {
                int order = s_orders[i];
                if ((1L << order) > left)
                {
                    continue;
                }

                if (Memory.TryAllocate(order, out ulong pfn))
                {
                    blocks.Add((pfn, 1L << order, order));
                    left -= 1L << order;
                    got = true;
                    break;
                }

                // This order is exhausted; do not try it again for this buffer (as the kernel's max_order does).
                maxOrderIndex = i + 1;
            }

            if (!got)
            {
                foreach ((ulong pfn, _, int order) in blocks)
                {
                    Memory.Free(pfn, order);
                }

                throw new OutOfMemoryException($"System heap: no memory for {pages} pages ({left} short).");
            }
        }

        var segments = new ScatterSegment[blocks.Count];
        for (int i = 0; i < blocks.Count; i++)
        {
            segments[i] = new ScatterSegment(blocks[i].Pfn << PhysicalMemory.PageShift, (ulong)blocks[i].Pages << PhysicalMemory.PageShift);
        }

        return new HeapAllocation(ScatterTable.FromOwnedArray(segments), [.. blocks]);
    }
}

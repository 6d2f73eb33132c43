using BenchmarkDotNet.Attributes;
using DmaBuf.Simulation;

namespace DmaBuf.Benchmarks;

/// <summary>
/// Map and unmap through a simulated IOMMU domain: a 1080p NV12 frame (760 pages, system-heap chunks of 256, 16 and 1
/// pages, physically scattered) and a single page. The frame cases report time per page mapped
/// (<c>OperationsPerInvoke</c> = 760), so they show the simulator's per-page cost against the design target of at
/// least 25 million simulated page mappings per second (40 ns per page, map and unmap together); the one-page case
/// shows the per-call overhead. The IOTLB of each unit holds another domain's translations; the "touch" case also
/// translates every page of the frame, so its invalidation drops 760 entries of its own. The first frame the heap hands
/// out has its two 1 MiB chunks adjacent and 2 MiB aligned, so it maps with one 2 MiB block and 248 pages (249 leaf
/// entries); the "NoBlock" case maps a frame that gets no block (760 leaf entries), the worst case for page-table writes.
/// Setup prints the leaf entries of both frames.
/// </summary>
[MemoryDiagnoser]
public class IommuMapBenchmark
{
    private const int FramePages = 760; // 1920 x 1080 x 1.5 bytes, rounded up to pages

    private IommuDomain _smmuStrict = null!;
    private IommuDomain _smmuLazy = null!;
    private IommuDomain _vtdStrict = null!;
    private ScatterTable _frame = null!;
    private ScatterTable _frameNoBlock = null!;
    private ScatterTable _page = null!;

    [GlobalSetup]
    public void Setup()
    {
        var stats = new SimStats();
        var clock = new SimClock();
        var memory = new PhysicalMemory(256L << 20, 0, stats, shuffleSeed: 7);
        _frame = SystemHeapTable(memory, FramePages);
        _page = SystemHeapTable(memory, 1);
        ScatterTable other = SystemHeapTable(memory, FramePages);
        CostProfile smmu = CostProfile.Load("smmuv3-strict");
        CostProfile vtd = CostProfile.Load("vtd-lazy");
        _smmuStrict = Domain(new IommuUnit("smmu0", memory, clock, smmu, stats, IommuMode.Strict), other);
        _smmuLazy = Domain(new IommuUnit("smmu1", memory, clock, smmu, stats, IommuMode.Lazy), other);
        _vtdStrict = Domain(new IommuUnit("dmar0", memory, clock, vtd, stats, IommuMode.Strict), other);

        // Allocated last, so the frames above keep their placement.
        IommuDomain probe = new IommuUnit("probe", memory, clock, smmu, stats, IommuMode.Strict).CreateDomain("probe");
        _frameNoBlock = SystemHeapTable(memory, FramePages);
        if (LeafEntries(probe, _frameNoBlock, stats) != FramePages)
        {
            _frameNoBlock = SystemHeapTable(memory, FramePages); // the heap alternates: the next frame gets no block
        }

        Console.WriteLine($"// leaf entries per map: frame {LeafEntries(probe, _frame, stats)}, no-block frame {LeafEntries(probe, _frameNoBlock, stats)}");
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = 1)]
    public void MapUnmapOnePageSmmuStrict()
    {
        ScatterTable mapped = _smmuStrict.Map(_page, DmaDirection.Bidirectional);
        _smmuStrict.Unmap(mapped, DmaDirection.Bidirectional);
    }

    [Benchmark(OperationsPerInvoke = FramePages)]
    public void MapUnmapFrameSmmuStrict()
    {
        ScatterTable mapped = _smmuStrict.Map(_frame, DmaDirection.Bidirectional);
        _smmuStrict.Unmap(mapped, DmaDirection.Bidirectional);
    }

    [Benchmark(OperationsPerInvoke = FramePages)]
    public void MapUnmapFrameNoBlockSmmuStrict()
    {
        ScatterTable mapped = _smmuStrict.Map(_frameNoBlock, DmaDirection.Bidirectional);
        _smmuStrict.Unmap(mapped, DmaDirection.Bidirectional);
    }

    [Benchmark(OperationsPerInvoke = FramePages)]
    public void MapUnmapFrameSmmuLazy()
    {
        ScatterTable mapped = _smmuLazy.Map(_frame, DmaDirection.Bidirectional);
        _smmuLazy.Unmap(mapped, DmaDirection.Bidirectional);
    }

    // As a device that touches every page between map and unmap: an IOTLB miss, a page walk and an IOTLB fill per page,
    // then an invalidation that really drops the frame's 760 entries.
    [Benchmark(OperationsPerInvoke = FramePages)]
    public void MapTouchUnmapFrameSmmuStrict()
    {
        ScatterTable mapped = _smmuStrict.Map(_frame, DmaDirection.Bidirectional);
        ulong iova = mapped.Segments[0].Address;
        for (ulong offset = 0; offset < mapped.TotalLength; offset += PhysicalMemory.PageSize)
        {
            _smmuStrict.TryTranslate(iova + offset, write: true, out _);
        }

        _smmuStrict.Unmap(mapped, DmaDirection.Bidirectional);
    }

    [Benchmark(OperationsPerInvoke = FramePages)]
    public void MapUnmapFrameVtdStrict()
    {
        ScatterTable mapped = _vtdStrict.Map(_frame, DmaDirection.Bidirectional);
        _vtdStrict.Unmap(mapped, DmaDirection.Bidirectional);
    }

    // A device domain on the unit, after a second domain has filled the shared IOTLB with a frame's translations.
    private static IommuDomain Domain(IommuUnit unit, ScatterTable otherFrame)
    {
        IommuDomain display = unit.CreateDomain("display");
        ulong iova = display.Map(otherFrame, DmaDirection.ToDevice).Segments[0].Address;
        for (ulong offset = 0; offset < otherFrame.TotalLength; offset += PhysicalMemory.PageSize)
        {
            display.TryTranslate(iova + offset, write: false, out _);
        }

        return unit.CreateDomain("vpu");
    }

    private static long LeafEntries(IommuDomain domain, ScatterTable frame, SimStats stats)
    {
        long before = stats.PagesMapped;
        ScatterTable mapped = domain.Map(frame, DmaDirection.Bidirectional);
        domain.Unmap(mapped, DmaDirection.Bidirectional);
        return stats.PagesMapped - before;
    }

    // Chunks as Linux's system heap takes them: the largest of orders 8, 4, 0 that still fits.
    private static ScatterTable SystemHeapTable(PhysicalMemory memory, int pages)
    {
        var segments = new List<ScatterSegment>();
        int left = pages;
        foreach (int order in (ReadOnlySpan<int>)[8, 4, 0])
        {
            while (left >= 1 << order)
            {
                if (!memory.TryAllocate(order, out ulong pfn))
                {
                    throw new InvalidOperationException("benchmark memory too small");
                }

                segments.Add(new ScatterSegment(pfn << PhysicalMemory.PageShift, (ulong)PhysicalMemory.PageSize << order));
                left -= 1 << order;
            }
        }

        return ScatterTable.FromOwnedArray([.. segments]);
    }
}

namespace DmaBuf.Simulation.Tests;

// A small simulated SoC for the hardware tests: memory, clock, counters, and helpers that allocate like a heap would.
internal sealed class TestSoc
{
    public TestSoc(long bytes = 64L << 20, long contiguousBytes = 16L << 20, bool deferFreeWhileReachable = true, int shuffleSeed = 0)
    {
        Memory = new PhysicalMemory(bytes, contiguousBytes, Stats, shuffleSeed, deferFreeWhileReachable);
    }

    public SimStats Stats { get; } = new();

    public SimClock Clock { get; } = new();

    public PhysicalMemory Memory { get; }

    public IommuUnit Unit(string profile = "smmuv3-strict", IommuMode mode = IommuMode.Strict) =>
        new("iommu", Memory, Clock, CostProfile.Load(profile), Stats, mode);

    public IommuUnit Unit(CostProfile profile, IommuMode mode) => new("iommu", Memory, Clock, profile, Stats, mode);

    public IommuDomain Domain(string profile = "smmuv3-strict", IommuMode mode = IommuMode.Strict) =>
        Unit(profile, mode).CreateDomain("dev");

    // N single pages that are never physically adjacent, so the table cannot coalesce: allocate pairs, keep the first.
    public ScatterTable ScatteredPages(int pages)
    {
        var segments = new ScatterSegment[pages];
        for (int i = 0; i < pages; i++)
        {
            Assert.True(Memory.TryAllocate(1, out ulong pfn));
            segments[i] = new ScatterSegment(pfn << PhysicalMemory.PageShift, PhysicalMemory.PageSize);
        }

        return new ScatterTable(segments);
    }

    public ScatterTable Contiguous(long pages)
    {
        Assert.True(Memory.TryAllocateContiguous(pages, out ulong pfn));
        return ScatterTable.Single(pfn << PhysicalMemory.PageShift, (ulong)pages * PhysicalMemory.PageSize);
    }

    public static ulong Pfn(ScatterTable table, int segment = 0) => table.Segments[segment].Address >> PhysicalMemory.PageShift;
}

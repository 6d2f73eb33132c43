namespace DmaBuf.Simulation.Tests;

public sealed class IommuUnitTests
{
    [Fact]
    public void Constructor_Profile_SizesTheIotlb()
    {
        var soc = new TestSoc();
        IommuUnit unit = soc.Unit(CostProfile.Load("smmuv3-strict").With("iotlbEntries", 64), IommuMode.Lazy);

        Assert.Equal(64, unit.Iotlb.Capacity);
        Assert.Equal(IommuMode.Lazy, unit.Mode);
        Assert.Equal("iommu", unit.Name);
    }

    [Fact]
    public void CreateDomain_Twice_DistinctAsidsAndIds()
    {
        IommuUnit unit = new TestSoc().Unit();

        IommuDomain a = unit.CreateDomain("a");
        IommuDomain b = unit.CreateDomain("b");

        Assert.NotEqual(a.Asid, b.Asid);
        Assert.NotEqual(a.Id, b.Id);
        Assert.Same(unit, a.Unit);
        Assert.Equal([a, b], unit.Domains);
    }

    [Fact]
    public void Iotlb_SameIovaInTwoDomains_EachTranslatesToItsOwnPage()
    {
        var soc = new TestSoc();
        IommuUnit unit = soc.Unit();
        IommuDomain a = unit.CreateDomain("a");
        IommuDomain b = unit.CreateDomain("b");
        ScatterTable pageA = soc.ScatteredPages(1);
        ScatterTable pageB = soc.ScatteredPages(1);
        ulong iovaA = a.Map(pageA, DmaDirection.ToDevice).Segments[0].Address;
        ulong iovaB = b.Map(pageB, DmaDirection.ToDevice).Segments[0].Address;
        Assert.Equal(iovaA, iovaB); // each domain has its own IOVA space, allocated the same way

        Assert.True(a.TryTranslate(iovaA, write: false, out ulong paA));
        Assert.True(b.TryTranslate(iovaB, write: false, out ulong paB));
        Assert.True(a.TryTranslate(iovaA, write: false, out ulong paAHit));

        Assert.Equal(pageA.Segments[0].Address, paA);
        Assert.Equal(pageB.Segments[0].Address, paB);
        Assert.Equal(paA, paAHit);
        Assert.Equal(2, unit.Iotlb.Count);
        Assert.Equal(1, soc.Stats.IotlbHits);
    }

    [Fact]
    public void CreateDomain_ThirtyTwoBitMask_AllocatesIovaBelowFourGiB()
    {
        var soc = new TestSoc();
        IommuDomain domain = soc.Unit().CreateDomain("dma32", addressBits: 32);

        ScatterTable mapped = domain.Map(soc.ScatteredPages(3), DmaDirection.ToDevice);

        Assert.True(mapped.Segments[0].End <= 1UL << 32);
    }
}

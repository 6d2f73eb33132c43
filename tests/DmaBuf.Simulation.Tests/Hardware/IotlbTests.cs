namespace DmaBuf.Simulation.Tests;

public sealed class IotlbTests
{
    private const ulong Page = PhysicalMemory.PageSize;
    private const ulong Block = 2UL << 20;

    [Fact]
    public void Lookup_Empty_Misses()
    {
        var tlb = new Iotlb(64);
        Assert.False(tlb.Lookup(1, 0x1000, out _, out _));
    }

    [Fact]
    public void Insert_Page_LookupHitsWithOffsetAndPermissions()
    {
        var tlb = new Iotlb(64);

        tlb.Insert(1, 0x5000, 0x4000_9000, block: false, IommuPermissions.Read);

        Assert.True(tlb.Lookup(1, 0x5123, out ulong pa, out IommuPermissions permissions));
        Assert.Equal(0x4000_9123UL, pa);
        Assert.Equal(IommuPermissions.Read, permissions);
        Assert.False(tlb.Lookup(1, 0x6000, out _, out _));
        Assert.Equal(1, tlb.Count);
    }

    [Fact]
    public void Insert_Block_TranslatesEveryPageInTheBlock()
    {
        var tlb = new Iotlb(64);

        tlb.Insert(1, Block * 3, 0x8000_0000, block: true, IommuPermissions.ReadWrite);

        Assert.True(tlb.Lookup(1, (Block * 3) + 0x1F_F00F, out ulong pa, out _));
        Assert.Equal(0x8000_0000UL + 0x1F_F00F, pa);
        Assert.False(tlb.Lookup(1, Block * 4, out _, out _));
    }

    [Fact]
    public void Lookup_OtherAsid_Misses()
    {
        var tlb = new Iotlb(64);
        tlb.Insert(1, 0x5000, 0x4000_9000, block: false, IommuPermissions.Read);
        Assert.False(tlb.Lookup(2, 0x5000, out _, out _));
    }

    [Fact]
    public void Insert_ManyMoreThanCapacity_CountStaysWithinCapacity()
    {
        var tlb = new Iotlb(128);

        for (ulong i = 0; i < 10_000; i++)
        {
            tlb.Insert(1, i * Page, 0x4000_0000 + (i * Page), block: false, IommuPermissions.Read);
        }

        Assert.Equal(128, tlb.Capacity);
        Assert.InRange(tlb.Count, 1, 128);
        Assert.True(tlb.Evictions >= 10_000 - 128);
        Assert.True(tlb.Lookup(1, 9_999 * Page, out _, out _)); // the newest entry is always present
        int held = tlb.Count;
        Assert.Equal(held, tlb.InvalidateAsid(1)); // per-ASID bookkeeping survived the evictions
        Assert.Equal(0, tlb.Count);
    }

    [Fact]
    public void Insert_FullSet_EvictsRoundRobin()
    {
        var tlb = new Iotlb(4, ways: 4); // one set of four ways
        for (ulong i = 0; i < 5; i++)
        {
            tlb.Insert(1, i * Page, 0x4000_0000 + (i * Page), block: false, IommuPermissions.Read);
        }

        Assert.False(tlb.Lookup(1, 0, out _, out _)); // way 0 went first
        for (ulong i = 1; i < 5; i++)
        {
            Assert.True(tlb.Lookup(1, i * Page, out _, out _));
        }

        tlb.Insert(1, 5 * Page, 0x4000_5000, block: false, IommuPermissions.Read);
        Assert.False(tlb.Lookup(1, Page, out _, out _)); // then way 1
        Assert.Equal(4, tlb.Count);
    }

    [Fact]
    public void InvalidatePage_RemovesThePageAndACoveringBlock()
    {
        var tlb = new Iotlb(64);
        tlb.Insert(1, 0x3000, 0x4000_0000, block: false, IommuPermissions.Read);
        tlb.Insert(1, 0x4000, 0x4000_1000, block: false, IommuPermissions.Read);
        tlb.Insert(1, Block, 0x8000_0000, block: true, IommuPermissions.Read);

        Assert.Equal(1, tlb.InvalidatePage(1, 0x3000));
        Assert.Equal(1, tlb.InvalidatePage(1, Block + 0x7000));

        Assert.False(tlb.Lookup(1, 0x3000, out _, out _));
        Assert.True(tlb.Lookup(1, 0x4000, out _, out _));
        Assert.False(tlb.Lookup(1, Block, out _, out _));
        Assert.Equal(1, tlb.Count);
    }

    [Fact]
    public void InvalidateRange_SmallRange_RemovesOnlyThatAsidsPagesInRange()
    {
        var tlb = new Iotlb(256);
        for (ulong i = 0; i < 10; i++)
        {
            tlb.Insert(1, i * Page, 0x4000_0000 + (i * Page), block: false, IommuPermissions.Read);
            tlb.Insert(2, i * Page, 0x5000_0000 + (i * Page), block: false, IommuPermissions.Read);
        }

        int removed = tlb.InvalidateRange(1, 2 * Page, 4 * Page);

        Assert.Equal(4, removed);
        for (ulong i = 0; i < 10; i++)
        {
            Assert.Equal(i < 2 || i >= 6, tlb.Lookup(1, i * Page, out _, out _));
            Assert.True(tlb.Lookup(2, i * Page, out _, out _));
        }

        Assert.Equal(16, tlb.Count);
    }

    [Fact]
    public void InvalidateRange_RangeLargerThanCapacity_ScansAndRemovesOverlaps()
    {
        var tlb = new Iotlb(16, ways: 4);
        tlb.Insert(1, 0x10_0000, 0x4000_0000, block: false, IommuPermissions.Read);
        tlb.Insert(1, 0x90_0000, 0x4000_1000, block: false, IommuPermissions.Read); // outside the range
        tlb.Insert(1, 0, 0x8000_0000, block: true, IommuPermissions.Read);           // block overlapping the range start
        tlb.Insert(2, 0x10_0000, 0x4000_2000, block: false, IommuPermissions.Read);

        int removed = tlb.InvalidateRange(1, 0x1000, 0x40_0000);

        Assert.Equal(2, removed);
        Assert.True(tlb.Lookup(1, 0x90_0000, out _, out _));
        Assert.True(tlb.Lookup(2, 0x10_0000, out _, out _));
        Assert.False(tlb.Lookup(1, 0x10_0000, out _, out _));
        Assert.Equal(2, tlb.Count);
    }

    [Fact]
    public void InvalidateAsid_RemovesEveryEntryOfThatAsidOnly()
    {
        var tlb = new Iotlb(64);
        tlb.Insert(1, 0x1000, 0x4000_0000, block: false, IommuPermissions.Read);
        tlb.Insert(1, Block, 0x8000_0000, block: true, IommuPermissions.Read);
        tlb.Insert(3, 0x1000, 0x4000_1000, block: false, IommuPermissions.Read);

        Assert.Equal(2, tlb.InvalidateAsid(1));

        Assert.Equal(1, tlb.Count);
        Assert.True(tlb.Lookup(3, 0x1000, out _, out _));
    }

    [Fact]
    public void Insert_InvalidAsid_Throws()
    {
        var tlb = new Iotlb(64);
        Assert.Throws<ArgumentOutOfRangeException>(() => tlb.Insert(0, 0, 0, block: false, IommuPermissions.Read));
    }
}

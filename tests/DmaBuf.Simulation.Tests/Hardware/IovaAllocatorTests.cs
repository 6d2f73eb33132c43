namespace DmaBuf.Simulation.Tests;

public sealed class IovaAllocatorTests
{
    private const ulong Limit = 1UL << 36; // 48-bit IOVA space in pages

    [Fact]
    public void TryAllocate_FreshSpace_AllocatesTopDownBelowTheLimit()
    {
        var iova = new IovaAllocator(1, Limit);

        Assert.True(iova.TryAllocate(1, out ulong first, out bool hit));
        Assert.True(iova.TryAllocate(1, out ulong second, out _));

        Assert.False(hit);
        Assert.Equal(Limit - 1, first);
        Assert.Equal(Limit - 2, second);
    }

    [Fact]
    public void TryAllocate_SmallSize_RoundedUpToPowerOfTwoAndAligned()
    {
        var iova = new IovaAllocator(1, Limit);
        Assert.True(iova.TryAllocate(1, out _, out _));

        Assert.True(iova.TryAllocate(3, out ulong pfn, out _));
        Assert.True(iova.TryAllocate(1, out ulong next, out _));

        Assert.Equal(0UL, pfn % 4);
        Assert.Equal(Limit - 8, pfn); // the 4-page slot below the first page, aligned to 4
        Assert.Equal(Limit - 2, next); // the hole left above it is reused first (highest fit)
    }

    [Theory]
    [InlineData(33UL, 64UL)]
    [InlineData(760UL, 1024UL)]
    [InlineData(1024UL, 1024UL)]
    public void TryAllocate_Above32Pages_AlignedToNextPowerOfTwo(ulong pages, ulong alignment)
    {
        var iova = new IovaAllocator(1, Limit);
        Assert.True(iova.TryAllocate(1, out _, out _));

        Assert.True(iova.TryAllocate(pages, out ulong pfn, out bool hit));

        Assert.False(hit);
        Assert.Equal(0UL, pfn % alignment);
        Assert.Equal((Limit - 1 - pages) & ~(alignment - 1), pfn); // highest aligned slot below the first page
    }

    [Fact]
    public void TryAllocate_Above32Pages_OccupiesOnlyItsSize()
    {
        var iova = new IovaAllocator(1, Limit);
        Assert.True(iova.TryAllocate(760, out ulong big, out _));

        Assert.True(iova.TryAllocate(200, out ulong above, out _));

        Assert.Equal(Limit - 1024, big);
        Assert.Equal(big + 768, above); // 200 pages aligned to 256 fit in the 264 free pages above the 760
    }

    [Fact]
    public void Free_SmallRange_NextAllocationOfThatSizeIsACacheHitOnTheSameRange()
    {
        var iova = new IovaAllocator(1, Limit);
        Assert.True(iova.TryAllocate(5, out ulong pfn, out _));
        iova.Free(pfn, 5);

        Assert.True(iova.TryAllocate(7, out ulong again, out bool hit)); // 5 and 7 both round up to 8
        Assert.True(iova.TryAllocate(1, out _, out bool otherSize));

        Assert.True(hit);
        Assert.Equal(pfn, again);
        Assert.False(otherSize);
    }

    [Fact]
    public void Free_SmallRange_StaysInTheTreeWhileCached()
    {
        var iova = new IovaAllocator(1, Limit);
        Assert.True(iova.TryAllocate(2, out ulong pfn, out _));

        iova.Free(pfn, 2);

        Assert.Equal(1, iova.CachedRanges);
        Assert.Equal(1, iova.RangesInTree);
    }

    [Fact]
    public void Free_LargeRange_IsReusedByTheNextAllocation()
    {
        var iova = new IovaAllocator(1, Limit);
        Assert.True(iova.TryAllocate(100, out ulong pfn, out _));
        Assert.True(iova.TryAllocate(100, out ulong second, out _));

        iova.Free(pfn, 100);
        Assert.True(iova.TryAllocate(100, out ulong again, out bool hit));

        Assert.Equal(pfn, again);
        Assert.False(hit);
        Assert.NotEqual(second, again);
        Assert.Equal(2, iova.RangesInTree);
    }

    [Fact]
    public void Free_UnknownRange_ThrowsInvalidOperation()
    {
        var iova = new IovaAllocator(1, Limit);
        Assert.True(iova.TryAllocate(100, out ulong pfn, out _));

        Assert.Throws<InvalidOperationException>(() => iova.Free(pfn + 1, 100));
        Assert.Throws<InvalidOperationException>(() => iova.Free(pfn, 99));
        iova.Free(pfn, 100);
        Assert.Throws<InvalidOperationException>(() => iova.Free(pfn, 100));
    }

    [Fact]
    public void TryAllocate_SpaceFull_ReturnsFalse()
    {
        var iova = new IovaAllocator(1, 64);

        Assert.False(iova.TryAllocate(33, out _, out _)); // needs a 64-aligned slot, and pfn 0 is excluded
        Assert.True(iova.TryAllocate(32, out ulong pfn, out _));
        Assert.True(iova.TryAllocate(16, out _, out _));
        Assert.True(iova.TryAllocate(8, out _, out _));
        Assert.False(iova.TryAllocate(8, out _, out _)); // [0, 8) would include the excluded pfn 0

        Assert.Equal(32UL, pfn);
    }

    [Fact]
    public void Free_BeyondCacheCapacity_ReturnsOverflowToTheTree()
    {
        var iova = new IovaAllocator(1, Limit);
        const int count = 5000;
        var pfns = new ulong[count];
        for (int i = 0; i < count; i++)
        {
            Assert.True(iova.TryAllocate(1, out pfns[i], out _));
        }

        foreach (ulong pfn in pfns)
        {
            iova.Free(pfn, 1);
        }

        int capacity = (2 + IovaAllocator.MaxDepotMagazines) * IovaAllocator.MagazineSize;
        Assert.InRange(iova.CachedRanges, capacity - IovaAllocator.MagazineSize, capacity);
        Assert.Equal(iova.CachedRanges, iova.RangesInTree); // everything not cached went back to the tree
    }
}

namespace DmaBuf.Simulation.Tests;

public sealed class PhysicalMemoryTests
{
    private const int Page = PhysicalMemory.PageSize;

    [Fact]
    public void Constructor_FreshMemory_EveryPageFreeAndNoBytesBacked()
    {
        var stats = new SimStats();
        var memory = new PhysicalMemory(1L << 30, 64L << 20, stats);

        Assert.Equal(262_144, memory.TotalPages);
        Assert.Equal(memory.TotalPages, memory.FreePages);
        Assert.Equal(0, memory.AllocatedPages);
        Assert.Equal(16_384, memory.ContiguousPages);
        Assert.Equal(0, memory.BackingBytes);
        Assert.Equal((memory.TotalPages - memory.ContiguousPages) / 1024, memory.FreeBlockCount(PhysicalMemory.MaxOrder));
    }

    [Fact]
    public void Write_OnePage_BacksOnlyOneChunk()
    {
        var memory = new PhysicalMemory(1L << 30, 0, new SimStats());
        Assert.True(memory.TryAllocate(0, out ulong pfn));

        memory.Write(pfn << PhysicalMemory.PageShift, [1, 2, 3]);

        Assert.Equal(2L << 20, memory.BackingBytes);
    }

    [Fact]
    public void TryAllocate_Order0FromOneMaxBlock_SplitsIntoOneBlockOfEveryLowerOrder()
    {
        var memory = new PhysicalMemory(4L << 20, 0, new SimStats());

        Assert.True(memory.TryAllocate(0, out ulong pfn));

        Assert.Equal(PhysicalMemory.FirstPfn, pfn);
        for (int order = 0; order < PhysicalMemory.MaxOrder; order++)
        {
            Assert.Equal(1, memory.FreeBlockCount(order));
        }

        Assert.Equal(0, memory.FreeBlockCount(PhysicalMemory.MaxOrder));
        Assert.Equal(1023, memory.FreePages);
        Assert.Equal(PageState.Allocated, memory.GetState(pfn));
    }

    [Fact]
    public void Free_LastAllocatedBlock_MergesBackIntoMaxOrderBlock()
    {
        var memory = new PhysicalMemory(4L << 20, 0, new SimStats());
        Assert.True(memory.TryAllocate(0, out ulong a));
        Assert.True(memory.TryAllocate(3, out ulong b));

        memory.Free(a, 0);
        Assert.Equal(0, memory.FreeBlockCount(PhysicalMemory.MaxOrder));
        memory.Free(b, 3);

        Assert.Equal(1, memory.FreeBlockCount(PhysicalMemory.MaxOrder));
        for (int order = 0; order < PhysicalMemory.MaxOrder; order++)
        {
            Assert.Equal(0, memory.FreeBlockCount(order));
        }

        Assert.Equal(1024, memory.FreePages);
    }

    [Fact]
    public void TryAllocate_WithoutShuffle_ReturnsNaturallyAlignedBlocksInAddressOrder()
    {
        var memory = new PhysicalMemory(16L << 20, 0, new SimStats());

        Assert.True(memory.TryAllocate(0, out ulong p0));
        Assert.True(memory.TryAllocate(0, out ulong p1));
        Assert.True(memory.TryAllocate(4, out ulong p16));

        Assert.Equal(p0 + 1, p1);
        Assert.Equal(0UL, p16 % 16);
        Assert.Equal(p0 + 16, p16);
    }

    [Fact]
    public void Free_Twice_ThrowsInvalidOperation()
    {
        var memory = new PhysicalMemory(4L << 20, 0, new SimStats());
        Assert.True(memory.TryAllocate(2, out ulong pfn));
        memory.Free(pfn, 2);

        Assert.Throws<InvalidOperationException>(() => memory.Free(pfn, 2));
        Assert.Equal(1024, memory.FreePages);
    }

    [Fact]
    public void Free_WrongOrderOrNeverAllocated_ThrowsInvalidOperation()
    {
        var memory = new PhysicalMemory(4L << 20, 0, new SimStats());
        Assert.True(memory.TryAllocate(2, out ulong pfn));

        Assert.Throws<InvalidOperationException>(() => memory.Free(pfn, 1));
        Assert.Throws<InvalidOperationException>(() => memory.Free(pfn + 1, 0));
        Assert.Throws<InvalidOperationException>(() => memory.Free(pfn + 100, 0));
        Assert.Equal(4, memory.AllocatedPages);
    }

    [Fact]
    public void TryAllocate_MemoryExhausted_ReturnsFalse()
    {
        var memory = new PhysicalMemory(8L << 20, 0, new SimStats());
        Assert.True(memory.TryAllocate(PhysicalMemory.MaxOrder, out _));
        Assert.True(memory.TryAllocate(PhysicalMemory.MaxOrder, out _));

        Assert.False(memory.TryAllocate(0, out _));
        Assert.Equal(0, memory.FreePages);
    }

    [Fact]
    public void TryAllocate_SameShuffleSeed_GivesTheSameScatteredSequence()
    {
        ulong[] first = Allocate8(new PhysicalMemory(256L << 20, 0, new SimStats(), shuffleSeed: 42));
        ulong[] second = Allocate8(new PhysicalMemory(256L << 20, 0, new SimStats(), shuffleSeed: 42));
        ulong[] other = Allocate8(new PhysicalMemory(256L << 20, 0, new SimStats(), shuffleSeed: 43));
        ulong[] unshuffled = Allocate8(new PhysicalMemory(256L << 20, 0, new SimStats()));

        Assert.Equal(first, second);
        Assert.NotEqual(first, other);
        Assert.Equal(unshuffled.Order(), unshuffled); // address order without shuffling
        Assert.NotEqual(first.Order(), first);        // scattered with it

        static ulong[] Allocate8(PhysicalMemory memory)
        {
            var pfns = new ulong[24];
            for (int i = 0; i < pfns.Length; i++)
            {
                Assert.True(memory.TryAllocate(8, out pfns[i]));
            }

            return pfns;
        }
    }

    [Fact]
    public void Free_UnreachablePage_PoisonsAndReturnsIt()
    {
        var memory = new PhysicalMemory(4L << 20, 0, new SimStats());
        Assert.True(memory.TryAllocate(0, out ulong pfn));
        memory.PageBytes(pfn).Fill(0x11);

        memory.Free(pfn, 0);

        Assert.Equal(PageState.Free, memory.GetState(pfn));
        Assert.True(memory.PageBytes(pfn).IndexOfAnyExcept(PhysicalMemory.PoisonByte) < 0);
    }

    [Fact]
    public void Read_FreedPage_CountsFreedPageAccessAndReturnsPoison()
    {
        var stats = new SimStats();
        var memory = new PhysicalMemory(4L << 20, 0, stats);
        Assert.True(memory.TryAllocate(0, out ulong pfn));
        memory.Write(pfn << PhysicalMemory.PageShift, new byte[Page]);
        memory.Free(pfn, 0);
        var buffer = new byte[64];

        memory.Read((pfn << PhysicalMemory.PageShift) + 100, buffer);

        Assert.Equal(1, stats.FreedPageAccesses);
        Assert.All(buffer, b => Assert.Equal(PhysicalMemory.PoisonByte, b));
    }

    [Fact]
    public void Write_FreedPage_CountsAndTheBytesLand()
    {
        var stats = new SimStats();
        var memory = new PhysicalMemory(4L << 20, 0, stats);
        Assert.True(memory.TryAllocate(0, out ulong pfn));
        memory.Free(pfn, 0);

        memory.Write(pfn << PhysicalMemory.PageShift, [9, 9]);

        Assert.Equal(1, stats.FreedPageAccesses);
        Assert.Equal(9, memory.PageBytes(pfn)[1]);
    }

    [Fact]
    public void Read_AllocatedRangeAcrossPages_ReadsWhatWasWrittenWithoutCounting()
    {
        var stats = new SimStats();
        var memory = new PhysicalMemory(4L << 20, 0, stats);
        Assert.True(memory.TryAllocate(1, out ulong pfn));
        byte[] data = Enumerable.Range(0, 300).Select(i => (byte)i).ToArray();
        ulong address = (pfn << PhysicalMemory.PageShift) + Page - 100;

        memory.Write(address, data);
        var back = new byte[300];
        memory.Read(address, back);

        Assert.Equal(data, back);
        Assert.Equal(0, stats.FreedPageAccesses + stats.FreePendingAccesses);
    }

    [Fact]
    public void Read_OutsideMemory_Throws()
    {
        var memory = new PhysicalMemory(4L << 20, 0, new SimStats());
        Assert.Throws<ArgumentOutOfRangeException>(() => memory.Read(0, new byte[1]));
        Assert.Throws<ArgumentOutOfRangeException>(() => memory.Read(memory.EndAddress - 1, new byte[2]));
    }

    [Fact]
    public void Free_ReachablePage_HeldBackAsFreePendingUntilReachDrops()
    {
        var stats = new SimStats();
        var memory = new PhysicalMemory(4L << 20, 0, stats);
        Assert.True(memory.TryAllocate(0, out ulong pfn));
        memory.PageBytes(pfn).Fill(0x22);
        memory.AddReach(pfn, 1);
        long freeBefore = memory.FreePages;

        memory.Free(pfn, 0);

        Assert.Equal(PageState.FreePending, memory.GetState(pfn));
        Assert.Equal(freeBefore, memory.FreePages);
        Assert.Equal(1, memory.FreePendingPages);
        Assert.Equal(0x22, memory.PageBytes(pfn)[0]); // not poisoned while a device may still be using it

        memory.RemoveReach(pfn, 1);

        Assert.Equal(PageState.Free, memory.GetState(pfn));
        Assert.Equal(freeBefore + 1, memory.FreePages);
        Assert.Equal(0, memory.FreePendingPages);
        Assert.Equal(PhysicalMemory.PoisonByte, memory.PageBytes(pfn)[0]);
        Assert.Equal(1, memory.FreeBlockCount(PhysicalMemory.MaxOrder)); // merged back with its buddies
    }

    [Fact]
    public void Free_PartlyReachableBlock_ReturnsUnreachablePagesAtOnce()
    {
        var memory = new PhysicalMemory(4L << 20, 0, new SimStats());
        Assert.True(memory.TryAllocate(2, out ulong pfn));
        memory.AddReach(pfn + 1, 1);

        memory.Free(pfn, 2);

        Assert.Equal(PageState.Free, memory.GetState(pfn));
        Assert.Equal(PageState.FreePending, memory.GetState(pfn + 1));
        Assert.Equal(1023, memory.FreePages);
        memory.RemoveReach(pfn + 1, 1);
        Assert.Equal(1, memory.FreeBlockCount(PhysicalMemory.MaxOrder));
    }

    [Fact]
    public void Read_FreePendingPage_CountsFreePendingAccess()
    {
        var stats = new SimStats();
        var memory = new PhysicalMemory(4L << 20, 0, stats);
        Assert.True(memory.TryAllocate(0, out ulong pfn));
        memory.AddReach(pfn, 1);
        memory.Free(pfn, 0);

        memory.Read(pfn << PhysicalMemory.PageShift, new byte[8]);

        Assert.Equal(1, stats.FreePendingAccesses);
        Assert.Equal(0, stats.FreedPageAccesses);
    }

    [Fact]
    public void Free_ReachableWithDeferDisabled_FreesAtOnce()
    {
        var memory = new PhysicalMemory(4L << 20, 0, new SimStats(), deferFreeWhileReachable: false);
        Assert.True(memory.TryAllocate(0, out ulong pfn));
        memory.AddReach(pfn, 1);

        memory.Free(pfn, 0);

        Assert.Equal(PageState.Free, memory.GetState(pfn));
        Assert.Equal(1024, memory.FreePages);
        memory.RemoveReach(pfn, 1); // the IOMMU catches up later: no effect on a free page
        Assert.Equal(1024, memory.FreePages);
    }

    [Fact]
    public void RemoveReach_BelowZero_Throws()
    {
        var memory = new PhysicalMemory(4L << 20, 0, new SimStats());
        Assert.True(memory.TryAllocate(0, out ulong pfn));

        Assert.Throws<InvalidOperationException>(() => memory.RemoveReach(pfn, 1));
        Assert.Equal(0, memory.ReachCount(pfn));
    }

    [Fact]
    public void TryAllocateContiguous_AfterFree_FirstFitReusesTheHole()
    {
        var memory = new PhysicalMemory(8L << 20, 4L << 20, new SimStats());
        Assert.True(memory.TryAllocateContiguous(10, out ulong a));
        Assert.True(memory.TryAllocateContiguous(5, out ulong b));
        Assert.Equal(memory.FirstContiguousPfn, a);
        Assert.Equal(a + 10, b);

        memory.FreeContiguous(a, 10);
        Assert.True(memory.TryAllocateContiguous(4, out ulong c));
        Assert.True(memory.TryAllocateContiguous(7, out ulong d));

        Assert.Equal(a, c);
        Assert.Equal(b + 5, d); // 6 pages left in the hole: too small for 7
        Assert.Equal(PageState.Allocated, memory.GetState(c + 3));
        Assert.Equal(PageState.Free, memory.GetState(c + 4));
    }

    [Fact]
    public void TryAllocateContiguous_LargerThanRegion_ReturnsFalse()
    {
        var memory = new PhysicalMemory(8L << 20, 4L << 20, new SimStats());
        Assert.False(memory.TryAllocateContiguous(1025, out _));
        Assert.True(memory.TryAllocateContiguous(1024, out _));
    }

    [Fact]
    public void FreeContiguous_WrongLengthOrTwice_ThrowsInvalidOperation()
    {
        var memory = new PhysicalMemory(8L << 20, 4L << 20, new SimStats());
        Assert.True(memory.TryAllocateContiguous(10, out ulong a));

        Assert.Throws<InvalidOperationException>(() => memory.FreeContiguous(a, 9));
        memory.FreeContiguous(a, 10);
        Assert.Throws<InvalidOperationException>(() => memory.FreeContiguous(a, 10));
        Assert.Equal(memory.TotalPages, memory.FreePages);
    }
}

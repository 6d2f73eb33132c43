namespace DmaBuf.Simulation.Tests;

public sealed class IommuDomainTests
{
    private const int Page = PhysicalMemory.PageSize;

    [Fact]
    public void Map_ScatteredPages_OneIovaRangeTranslatingToEachPageInOrder()
    {
        var soc = new TestSoc();
        IommuDomain domain = soc.Domain();
        ScatterTable physical = soc.ScatteredPages(5);

        ScatterTable mapped = domain.Map(physical, DmaDirection.Bidirectional);

        Assert.Equal(1, mapped.Count);
        Assert.Equal(physical.TotalLength, mapped.TotalLength);
        ulong iova = mapped.Segments[0].Address;
        for (int i = 0; i < 5; i++)
        {
            Assert.True(domain.TryTranslate(iova + (ulong)(i * Page) + 12, write: false, out ulong pa));
            Assert.Equal(physical.Segments[i].Address + 12, pa);
        }

        Assert.Equal(1, soc.Stats.MapCalls);
        Assert.Equal(5, soc.Stats.PagesMapped);
        Assert.Equal(1, domain.LiveMappings);
        Assert.Equal(1, soc.Memory.ReachCount(TestSoc.Pfn(physical, 3)));
    }

    [Fact]
    public void Map_AlignedContiguousRun_WritesBlockEntries()
    {
        var soc = new TestSoc(contiguousBytes: 16L << 20); // the contiguous region starts 2 MiB aligned
        IommuDomain domain = soc.Domain();
        ScatterTable physical = soc.Contiguous(1024 + 1);

        ScatterTable mapped = domain.Map(physical, DmaDirection.Bidirectional);

        Assert.Equal(2 + 1, soc.Stats.PagesMapped);
        Assert.Equal(0UL, mapped.Segments[0].Address % (2 << 20));
    }

    [Fact]
    public void Map_AdjacentChunks_CoalescedIntoOneRun()
    {
        var soc = new TestSoc(contiguousBytes: 16L << 20);
        IommuDomain domain = soc.Domain();
        ScatterTable run = soc.Contiguous(512);
        ulong start = run.Segments[0].Address;
        var physical = new ScatterTable([new ScatterSegment(start, 256 * Page), new ScatterSegment(start + (256 * Page), 256 * Page)]);

        domain.Map(physical, DmaDirection.Bidirectional);

        Assert.Equal(1, soc.Stats.PagesMapped); // one 2 MiB block covers both chunks
    }

    [Fact]
    public void Map_UnalignedRun_ThrowsDmaMappingException()
    {
        var soc = new TestSoc();
        IommuDomain domain = soc.Domain();
        ScatterTable page = soc.ScatteredPages(1);

        Assert.Throws<DmaMappingException>(() => domain.Map(ScatterTable.Single(page.Segments[0].Address + 8, 64), DmaDirection.ToDevice));
        Assert.Throws<DmaMappingException>(() => domain.Map(ScatterTable.Single(0x1000, Page), DmaDirection.ToDevice));
        Assert.Equal(0, soc.Stats.MapCalls);
    }

    [Fact]
    public void DmaWrite_AfterStrictUnmap_FaultIsRecorded()
    {
        var soc = new TestSoc();
        IommuDomain domain = soc.Domain();
        ScatterTable mapped = domain.Map(soc.ScatteredPages(2), DmaDirection.Bidirectional);
        ulong iova = mapped.Segments[0].Address;
        Assert.True(domain.DmaWrite(iova, new byte[2 * Page])); // warms the IOTLB too

        domain.Unmap(mapped, DmaDirection.Bidirectional);
        bool ok = domain.DmaWrite(iova + Page + 4, new byte[16]);

        Assert.False(ok);
        Assert.Equal(1, soc.Stats.DmaFaults);
        DmaFault fault = Assert.Single(domain.Faults);
        Assert.Equal(iova + Page + 4, fault.DeviceAddress);
        Assert.True(fault.Write);
        Assert.Equal("unmapped", fault.Reason);
        Assert.Equal("dev", fault.AddressSpace);
    }

    [Fact]
    public void Unmap_Strict_PagesUnreachableAndFreedAtOnce()
    {
        var soc = new TestSoc();
        IommuDomain domain = soc.Domain();
        ScatterTable physical = soc.ScatteredPages(1);
        ulong pfn = TestSoc.Pfn(physical);
        ScatterTable mapped = domain.Map(physical, DmaDirection.Bidirectional);

        domain.Unmap(mapped, DmaDirection.Bidirectional);
        soc.Memory.Free(pfn, 1);

        Assert.Equal(0, soc.Memory.ReachCount(pfn));
        Assert.Equal(PageState.Free, soc.Memory.GetState(pfn));
        Assert.Equal(0, domain.LiveMappings);
        Assert.Equal(0, domain.PageTableEntries);
    }

    [Fact]
    public void DmaRead_AfterLazyUnmap_StaleIotlbReachesFreePendingPageUntilFlush()
    {
        var soc = new TestSoc();
        IommuDomain domain = soc.Domain(mode: IommuMode.Lazy);
        ScatterTable physical = soc.ScatteredPages(1);
        ulong pfn = TestSoc.Pfn(physical);
        ScatterTable mapped = domain.Map(physical, DmaDirection.Bidirectional);
        ulong iova = mapped.Segments[0].Address;
        soc.Memory.PageBytes(pfn).Fill(0x5a);
        Assert.True(domain.DmaRead(iova, new byte[64])); // the translation is now cached

        domain.Unmap(mapped, DmaDirection.Bidirectional);
        long freeBefore = soc.Memory.FreePages;
        soc.Memory.Free(pfn, 1); // the heap lets go of the page

        Assert.Equal(PageState.FreePending, soc.Memory.GetState(pfn));
        Assert.Equal(freeBefore + 1, soc.Memory.FreePages); // only the unmapped second page of the pair came back
        var stale = new byte[64];
        Assert.True(domain.DmaRead(iova, stale));         // no fault: the IOTLB still translates
        Assert.All(stale, b => Assert.Equal(0x5a, b));     // and the old data is still there
        Assert.Equal(1, soc.Stats.FreePendingAccesses);
        Assert.Equal(0, soc.Stats.FreedPageAccesses);
        Assert.Equal(0, soc.Stats.DmaFaults);
        Assert.Equal(1, domain.PendingFlushEntries);

        domain.FlushNow();

        Assert.Equal(PageState.Free, soc.Memory.GetState(pfn));
        Assert.Equal(freeBefore + 2, soc.Memory.FreePages);
        Assert.Equal(PhysicalMemory.PoisonByte, soc.Memory.PageBytes(pfn)[0]);
        Assert.False(domain.DmaRead(iova, new byte[64]));
        Assert.Equal(1, soc.Stats.DmaFaults);
        Assert.Equal(0, soc.Stats.FreedPageAccesses);
    }

    [Fact]
    public void DmaRead_AfterLazyUnmapWithoutDeferredFree_DetectedAsFreedPageAccess()
    {
        var soc = new TestSoc(deferFreeWhileReachable: false);
        IommuDomain domain = soc.Domain(mode: IommuMode.Lazy);
        ScatterTable physical = soc.ScatteredPages(1);
        ulong pfn = TestSoc.Pfn(physical);
        ScatterTable mapped = domain.Map(physical, DmaDirection.Bidirectional);
        ulong iova = mapped.Segments[0].Address;
        Assert.True(domain.DmaRead(iova, new byte[64]));

        domain.Unmap(mapped, DmaDirection.Bidirectional);
        soc.Memory.Free(pfn, 1);
        var buffer = new byte[64];
        bool ok = domain.DmaRead(iova, buffer);

        Assert.True(ok);
        Assert.Equal(PageState.Free, soc.Memory.GetState(pfn));
        Assert.Equal(1, soc.Stats.FreedPageAccesses);
        Assert.All(buffer, b => Assert.Equal(PhysicalMemory.PoisonByte, b));
    }

    [Fact]
    public void Unmap_Lazy256Entries_FlushesTheQueue()
    {
        var soc = new TestSoc();
        IommuDomain domain = soc.Domain(mode: IommuMode.Lazy);
        ScatterTable physical = soc.ScatteredPages(1);

        for (int i = 0; i < 255; i++)
        {
            domain.Unmap(domain.Map(physical, DmaDirection.ToDevice), DmaDirection.ToDevice);
        }

        Assert.Equal(255, domain.PendingFlushEntries);
        Assert.Equal(0, soc.Stats.LazyFlushes);
        Assert.Equal(255, soc.Memory.ReachCount(TestSoc.Pfn(physical)));

        domain.Unmap(domain.Map(physical, DmaDirection.ToDevice), DmaDirection.ToDevice);

        Assert.Equal(0, domain.PendingFlushEntries);
        Assert.Equal(1, soc.Stats.LazyFlushes);
        Assert.Equal(1, soc.Stats.IotlbInvalidations);
        Assert.Equal(256, soc.Stats.IovaFrees);
        Assert.Equal(0, soc.Memory.ReachCount(TestSoc.Pfn(physical)));
    }

    [Fact]
    public void Unmap_LazyTimerAfterTenMilliseconds_FlushesTheQueue()
    {
        var soc = new TestSoc();
        IommuDomain domain = soc.Domain(mode: IommuMode.Lazy);
        ScatterTable physical = soc.ScatteredPages(1);
        long start = soc.Clock.NowNs;

        domain.Unmap(domain.Map(physical, DmaDirection.ToDevice), DmaDirection.ToDevice); // costs well under 0.1 ms
        soc.Clock.AdvanceTo(start + 9_000_000);

        Assert.Equal(1, domain.PendingFlushEntries);
        Assert.Equal(0, soc.Stats.LazyFlushes);

        soc.Clock.AdvanceTo(start + 10_100_000);

        Assert.Equal(0, domain.PendingFlushEntries);
        Assert.Equal(1, soc.Stats.LazyFlushes);
        Assert.Equal(0, soc.Memory.ReachCount(TestSoc.Pfn(physical)));
    }

    [Fact]
    public void Map_ChargedPastTheFlushTimer_TimerWaitsForTheNextAdvance()
    {
        // Map and unmap may run under a buffer lock: charging their cost must not run timer callbacks (rule 5).
        var soc = new TestSoc();
        IommuDomain domain = soc.Unit(CostProfile.Load("vtd-lazy").With("flushTimeoutNs", 1), IommuMode.Lazy).CreateDomain("dev");
        ScatterTable physical = soc.ScatteredPages(1);
        domain.Unmap(domain.Map(physical, DmaDirection.ToDevice), DmaDirection.ToDevice);

        domain.Map(physical, DmaDirection.ToDevice); // charges far more than 1 ns

        Assert.Equal(1, domain.PendingFlushEntries);
        soc.Clock.Advance(0);
        Assert.Equal(0, domain.PendingFlushEntries);
        Assert.Equal(1, soc.Stats.LazyFlushes);
    }

    [Fact]
    public void Unmap_LazyFlushThenMap_ReusesTheFreedIova()
    {
        var soc = new TestSoc();
        IommuDomain domain = soc.Domain(mode: IommuMode.Lazy);
        ScatterTable physical = soc.ScatteredPages(40);
        ScatterTable first = domain.Map(physical, DmaDirection.ToDevice);
        domain.Unmap(first, DmaDirection.ToDevice);

        ScatterTable whilePending = domain.Map(physical, DmaDirection.ToDevice);
        domain.FlushNow();
        domain.Unmap(whilePending, DmaDirection.ToDevice);
        domain.FlushNow();
        ScatterTable afterFlush = domain.Map(physical, DmaDirection.ToDevice);

        Assert.NotEqual(first.Segments[0].Address, whilePending.Segments[0].Address); // still held by the queue
        Assert.Equal(first.Segments[0].Address, afterFlush.Segments[0].Address);
    }

    [Fact]
    public void DmaWrite_ToDeviceMapping_FaultsAsWriteToReadOnly()
    {
        var soc = new TestSoc();
        IommuDomain domain = soc.Domain();
        ScatterTable mapped = domain.Map(soc.ScatteredPages(1), DmaDirection.ToDevice);
        ulong iova = mapped.Segments[0].Address;

        Assert.True(domain.DmaRead(iova, new byte[32]));
        bool ok = domain.DmaWrite(iova, new byte[32]);

        Assert.False(ok);
        Assert.Equal("write to a read-only mapping", Assert.Single(domain.Faults).Reason);
        Assert.Equal(1, soc.Stats.DmaFaults);
    }

    [Fact]
    public void DmaWrite_FromDeviceMapping_DataLandsInThePhysicalPages()
    {
        var soc = new TestSoc();
        IommuDomain domain = soc.Domain();
        ScatterTable physical = soc.ScatteredPages(2);
        ulong iova = domain.Map(physical, DmaDirection.FromDevice).Segments[0].Address;
        byte[] data = Enumerable.Range(0, 2 * Page).Select(i => (byte)(i * 7)).ToArray();

        Assert.True(domain.DmaWrite(iova, data));

        Assert.Equal(data.AsSpan(Page, Page), soc.Memory.PageBytes(TestSoc.Pfn(physical, 1)));
        var back = new byte[2 * Page];
        Assert.True(domain.DmaRead(iova, back));
        Assert.Equal(data, back);
    }

    [Fact]
    public void TryTranslate_Twice_MissAndWalkThenHit()
    {
        var soc = new TestSoc();
        IommuDomain domain = soc.Domain();
        ulong iova = domain.Map(soc.ScatteredPages(1), DmaDirection.ToDevice).Segments[0].Address;

        Assert.True(domain.TryTranslate(iova, write: false, out _));
        Assert.True(domain.TryTranslate(iova + 8, write: false, out _));

        Assert.Equal(1, soc.Stats.IotlbMisses);
        Assert.Equal(1, soc.Stats.PageWalks);
        Assert.Equal(1, soc.Stats.IotlbHits);
        Assert.Equal(CostProfile.Load("smmuv3-strict").PageWalkNs, soc.Stats.TranslationNs);
        Assert.False(domain.TryTranslate(iova, write: true, out _));
    }

    [Fact]
    public void Map_NPages_MappingNsAndClockFollowTheProfileFormula()
    {
        var soc = new TestSoc();
        IommuDomain domain = soc.Domain();
        CostProfile p = domain.Unit.Profile;
        ScatterTable physical = soc.ScatteredPages(8);

        ScatterTable mapped = domain.Map(physical, DmaDirection.Bidirectional);

        long firstMap = p.MapCallNs + p.IovaAllocNs + (8 * p.PteWriteNs);
        Assert.Equal(firstMap, soc.Stats.MappingNs);
        Assert.Equal(firstMap, soc.Clock.NowNs);

        domain.Unmap(mapped, DmaDirection.Bidirectional);
        long unmap = p.UnmapCallNs + (8 * p.PteClearNs) + (8 * p.TlbiCommandNs) + p.CmdSyncNs + p.IovaFreeNs;
        Assert.Equal(firstMap + unmap, soc.Stats.MappingNs);

        domain.Map(physical, DmaDirection.Bidirectional); // the IOVA now comes from the per-size cache
        long cachedMap = p.MapCallNs + p.IovaCachedAllocNs + (8 * p.PteWriteNs);
        Assert.Equal(firstMap + unmap + cachedMap, soc.Stats.MappingNs);
        Assert.Equal(soc.Stats.MappingNs, soc.Clock.NowNs);
        Assert.Equal(2, soc.Stats.IovaAllocs);
        Assert.Equal(1, soc.Stats.IovaCacheHits);
    }

    [Fact]
    public void Unmap_SmmuV3Strict100Pages_OneCommandPerPageInTwoBatches()
    {
        var soc = new TestSoc();
        IommuDomain domain = soc.Domain();
        CostProfile p = domain.Unit.Profile;
        ScatterTable mapped = domain.Map(soc.ScatteredPages(100), DmaDirection.Bidirectional);
        long before = soc.Stats.MappingNs;

        domain.Unmap(mapped, DmaDirection.Bidirectional);

        Assert.Equal(100, soc.Stats.IotlbInvalidations);
        long expected = p.UnmapCallNs + (100 * p.PteClearNs) + (100 * p.TlbiCommandNs) + (2 * p.CmdSyncNs) + p.IovaFreeNs;
        Assert.Equal(expected, soc.Stats.MappingNs - before);
    }

    [Theory]
    [InlineData(511, 511)]
    [InlineData(512, 1)]
    [InlineData(600, 1)]
    public void Unmap_SmmuV3Strict_FullAsidInvalidationFromTheThreshold(int pages, int commands)
    {
        var soc = new TestSoc();
        IommuUnit unit = soc.Unit();
        IommuDomain domain = unit.CreateDomain("dev");
        IommuDomain other = unit.CreateDomain("other");
        ScatterTable mapped = domain.Map(soc.ScatteredPages(pages), DmaDirection.Bidirectional);
        ScatterTable otherMapped = other.Map(soc.ScatteredPages(1), DmaDirection.Bidirectional);
        ulong iova = mapped.Segments[0].Address;
        Assert.True(domain.TryTranslate(iova, write: false, out _));
        Assert.True(other.TryTranslate(otherMapped.Segments[0].Address, write: false, out _));
        long before = soc.Stats.MappingNs;

        domain.Unmap(mapped, DmaDirection.Bidirectional);

        CostProfile p = unit.Profile;
        Assert.Equal(commands, soc.Stats.IotlbInvalidations);
        long invalidation = commands == 1
            ? p.FullInvalidateNs
            : (pages * p.TlbiCommandNs) + ((pages + 63) / 64 * p.CmdSyncNs);
        Assert.Equal(p.UnmapCallNs + (pages * p.PteClearNs) + invalidation + p.IovaFreeNs, soc.Stats.MappingNs - before);
        Assert.Equal(1, unit.Iotlb.Count); // this domain's entry is gone, the other domain's stays
        Assert.False(domain.TryTranslate(iova, write: false, out _));
    }

    [Fact]
    public void Unmap_VtdStrict_OneRangeCommandAndOneWait()
    {
        var soc = new TestSoc();
        IommuDomain domain = soc.Domain("vtd-lazy", IommuMode.Strict);
        CostProfile p = domain.Unit.Profile;
        ScatterTable mapped = domain.Map(soc.ScatteredPages(100), DmaDirection.Bidirectional);
        long before = soc.Stats.MappingNs;

        domain.Unmap(mapped, DmaDirection.Bidirectional);

        Assert.Equal(1, soc.Stats.IotlbInvalidations);
        Assert.Equal(p.UnmapCallNs + (100 * p.PteClearNs) + p.RangeTlbiNs + p.CmdSyncNs + p.IovaFreeNs, soc.Stats.MappingNs - before);
    }

    [Fact]
    public void Unmap_VtdLazy_ClearsOnlyAndTheFlushPaysForTheQueue()
    {
        var soc = new TestSoc();
        IommuDomain domain = soc.Domain("vtd-lazy", IommuMode.Lazy);
        CostProfile p = domain.Unit.Profile;
        ScatterTable a = domain.Map(soc.ScatteredPages(3), DmaDirection.Bidirectional);
        ScatterTable b = domain.Map(soc.ScatteredPages(2), DmaDirection.Bidirectional);
        long before = soc.Stats.MappingNs;

        domain.Unmap(a, DmaDirection.Bidirectional);
        domain.Unmap(b, DmaDirection.Bidirectional);

        Assert.Equal((2 * p.UnmapCallNs) + (5 * p.PteClearNs), soc.Stats.MappingNs - before);
        Assert.Equal(0, soc.Stats.IotlbInvalidations);
        Assert.Equal(0, soc.Stats.IovaFrees);

        before = soc.Stats.MappingNs;
        domain.FlushNow();

        Assert.Equal(p.FlushNs + (2 * p.IovaFreeNs), soc.Stats.MappingNs - before);
        Assert.Equal(1, soc.Stats.IotlbInvalidations);
        Assert.Equal(2, soc.Stats.IovaFrees);
    }

    [Fact]
    public void Unmap_NotALiveMapping_ThrowsArgumentException()
    {
        var soc = new TestSoc();
        IommuDomain domain = soc.Domain();
        ScatterTable physical = soc.ScatteredPages(2);
        ScatterTable mapped = domain.Map(physical, DmaDirection.Bidirectional);

        Assert.Throws<ArgumentException>(() => domain.Unmap(physical, DmaDirection.Bidirectional));
        Assert.Throws<ArgumentException>(() => domain.Unmap(ScatterTable.Single(mapped.Segments[0].Address, Page), DmaDirection.Bidirectional));
        domain.Unmap(mapped, DmaDirection.Bidirectional);
        var ex = Assert.Throws<ArgumentException>(() => domain.Unmap(mapped, DmaDirection.Bidirectional));
        Assert.Contains("not a live mapping", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Unmap_OtherDirectionThanMapped_ThrowsArgumentException()
    {
        var soc = new TestSoc();
        IommuDomain domain = soc.Domain();
        ScatterTable mapped = domain.Map(soc.ScatteredPages(1), DmaDirection.ToDevice);

        Assert.Throws<ArgumentException>(() => domain.Unmap(mapped, DmaDirection.FromDevice));
        Assert.Equal(1, domain.LiveMappings);
    }

    [Fact]
    public void Map_SamePagesTwice_ReachCountsBoth()
    {
        var soc = new TestSoc();
        IommuDomain domain = soc.Domain();
        ScatterTable physical = soc.ScatteredPages(1);
        ulong pfn = TestSoc.Pfn(physical);

        ScatterTable first = domain.Map(physical, DmaDirection.ToDevice);
        ScatterTable second = domain.Map(physical, DmaDirection.ToDevice);
        Assert.Equal(2, soc.Memory.ReachCount(pfn));
        domain.Unmap(first, DmaDirection.ToDevice);

        Assert.Equal(1, soc.Memory.ReachCount(pfn));
        Assert.NotEqual(first.Segments[0].Address, second.Segments[0].Address);
    }
}

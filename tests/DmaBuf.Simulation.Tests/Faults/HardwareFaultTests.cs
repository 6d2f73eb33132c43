using DmaBuf.Testing;

namespace DmaBuf.Simulation.Tests;

/// <summary>
/// The simulated hardware made to fail: page and contiguous allocations (out of memory), IOVA allocation and page-table
/// writes part way through a map. A failed operation leaves everything as it was (rule 11).
/// </summary>
public sealed class HardwareFaultTests
{
    private const int Size = 64 * 1024;

    private static void AssertDomainEmpty(IommuDomain domain, PhysicalMemory memory, ScatterTable physical)
    {
        Assert.Equal(0, domain.LiveMappings);
        Assert.Equal(0, domain.PageTableEntries);
        Assert.Equal(0, domain.IovaRangesHeld);
        foreach (ScatterSegment s in physical.Segments)
        {
            for (ulong pa = s.Address; pa < s.End; pa += PhysicalMemory.PageSize)
            {
                Assert.Equal(0, memory.ReachCount(pa >> PhysicalMemory.PageShift));
            }
        }
    }

    [Fact]
    public void Map_IovaAllocationFails_NothingWritten()
    {
        var soc = new TestSoc();
        IommuDomain domain = soc.Domain();
        var faults = new FaultInjector<SimFaultSite>().FailOnCall(SimFaultSite.IovaAllocation, 1);
        domain.FaultInjection = faults.ShouldFail;
        ScatterTable physical = soc.ScatteredPages(4);

        Assert.Throws<DmaMappingException>(() => domain.Map(physical, DmaDirection.ToDevice));

        AssertDomainEmpty(domain, soc.Memory, physical);
        Assert.Equal(0, soc.Stats.MapCalls + soc.Stats.PagesMapped + soc.Stats.IovaAllocs);
        domain.Unmap(domain.Map(physical, DmaDirection.ToDevice), DmaDirection.ToDevice); // and the next map works
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(5)]
    [InlineData(8)]
    public void Map_PageTableWriteFailsPartWay_UndoesEntriesReachAndIova(int failingWrite)
    {
        // Eight scattered pages: eight runs, one page-table write each, so the failure comes after failingWrite - 1 of them.
        var soc = new TestSoc();
        IommuDomain domain = soc.Domain();
        var faults = new FaultInjector<SimFaultSite>().FailOnCall(SimFaultSite.PageTableWrite, failingWrite);
        domain.FaultInjection = faults.ShouldFail;
        ScatterTable physical = soc.ScatteredPages(8);

        Assert.Throws<DmaMappingException>(() => domain.Map(physical, DmaDirection.Bidirectional));

        Assert.Equal(1, faults.Failures(SimFaultSite.PageTableWrite));
        AssertDomainEmpty(domain, soc.Memory, physical);
        Assert.Equal(soc.Stats.PagesMapped, soc.Stats.PagesUnmapped);
        Assert.Equal(failingWrite - 1, soc.Stats.PagesMapped);
        Assert.Equal(soc.Stats.IovaAllocs, soc.Stats.IovaFrees);
        Assert.Equal(0, soc.Stats.MapCalls);

        ScatterTable again = domain.Map(physical, DmaDirection.Bidirectional);
        Assert.Equal(8, domain.PageTableEntries);
        Assert.True(domain.DmaRead(again.Segments[0].Address, new byte[8 * PhysicalMemory.PageSize]));
    }

    [Fact]
    public void Map_PageTableWriteFailsInsideOneContiguousRun_UndoesTheRunsBlocks()
    {
        // One 8 MiB contiguous run, 2 MiB aligned: written as blocks, one write each; the third fails.
        var soc = new TestSoc(bytes: 64L << 20, contiguousBytes: 32L << 20);
        IommuDomain domain = soc.Domain();
        ScatterTable physical = soc.Contiguous(2048);
        Assert.Equal(0UL, physical.Segments[0].Address % (2UL << 20));
        var faults = new FaultInjector<SimFaultSite>().FailOnCall(SimFaultSite.PageTableWrite, 3);
        domain.FaultInjection = faults.ShouldFail;

        Assert.Throws<DmaMappingException>(() => domain.Map(physical, DmaDirection.ToDevice));

        Assert.Equal(3, faults.Calls(SimFaultSite.PageTableWrite)); // two blocks were written before the failure...
        AssertDomainEmpty(domain, soc.Memory, physical);            // ...and cleared again
        Assert.Equal(soc.Stats.IovaAllocs, soc.Stats.IovaFrees);
    }

    [Fact]
    public void AttachmentMap_AddressSpaceFails_AttachmentHasNoMapping_AndNothingLeaks()
    {
        var rig = new FaultRig();
        using (DmaBufHandle handle = rig.Soc.SystemHeap.Allocate(3 << 20)) // 768 pages: more than one page table's worth
        using (DmaBufAttachment a = handle.Attach(rig.Soc.Display))
        {
            rig.Hardware.FailOnCall(SimFaultSite.PageTableWrite, 2);

            Assert.Throws<DmaMappingException>(() => a.Map(DmaDirection.ToDevice));

            Assert.Equal(0, a.LiveMappingCount);
            rig.Hardware.FailNextCall(SimFaultSite.IovaAllocation);
            Assert.Throws<DmaMappingException>(() => a.Map(DmaDirection.ToDevice));
            Assert.Equal(0, a.LiveMappingCount);
        }

        rig.AssertNothingLeaked();
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public void SystemHeapAllocate_OutOfMemoryPartWay_GivesBackEveryBlock(int failingAllocation)
    {
        // 760 pages = 2 x order 8 + 15 x order 4 + 8 x order 0: the heap has taken failingAllocation - 1 blocks when it fails.
        var rig = new FaultRig();
        rig.Hardware.FailFromCall(SimFaultSite.PageAllocation, failingAllocation);

        Assert.Throws<OutOfMemoryException>(() => rig.Soc.SystemHeap.Allocate(760 * 4096));

        Assert.Equal(0, rig.System.Faults.Calls(ExporterOperation.Release)); // never exported, so never released
        rig.AssertNothingLeaked();
    }

    [Theory]
    [InlineData("contiguous")]
    [InlineData("device-local")]
    public void ContiguousAllocate_OutOfMemory_NothingTaken(string heap)
    {
        var rig = new FaultRig();
        SimHeap h = heap == "contiguous" ? rig.Soc.ContiguousHeap : rig.Soc.DeviceLocalHeap;
        rig.Hardware.FailNextCall(SimFaultSite.ContiguousAllocation);

        Assert.Throws<OutOfMemoryException>(() => h.Allocate(Size));

        rig.AssertNothingLeaked();
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public void Evict_ScatteredPlacementFailsPartWay_FreesWhatItTook_BufferStaysWhereItWas(int failingAllocation)
    {
        var rig = new FaultRig();
        byte[] data = [.. Enumerable.Range(0, 320 * 1024).Select(i => (byte)(i * 13 + 1))];
        using (DmaBufHandle handle = rig.Soc.DeviceLocalHeap.Allocate(data.Length)) // 80 pages: 5 x order 4
        {
            using (IDmaBufCpuView view = handle.Vmap())
            {
                handle.BeginCpuAccess(CpuAccess.Write);
                view.Write(0, data);
                handle.EndCpuAccess(CpuAccess.Write);
            }

            ScatterTable before = rig.Soc.DeviceLocalHeap.AllocationOf(handle.Buffer).Physical;
            long allocated = rig.Soc.Memory.AllocatedPages;
            rig.Hardware.FailFromCall(SimFaultSite.PageAllocation, failingAllocation);

            Assert.Throws<OutOfMemoryException>(() => rig.Soc.DeviceLocalHeap.Evict(handle));

            Assert.Same(before, rig.Soc.DeviceLocalHeap.AllocationOf(handle.Buffer).Physical);
            Assert.Equal(0, rig.Soc.DeviceLocalHeap.AllocationOf(handle.Buffer).Moves);
            Assert.Equal(allocated, rig.Soc.Memory.AllocatedPages);
            rig.Hardware.Heal();
            byte[] read = new byte[data.Length];
            using (DmaBufAttachment gpu = handle.Attach(rig.Soc.Gpu))
            {
                Assert.True(rig.Soc.Gpu.DmaRead(gpu.Map(DmaDirection.ToDevice), 0, read));
            }

            Assert.Equal(data, read);
        }

        rig.AssertNothingLeaked();
    }
}

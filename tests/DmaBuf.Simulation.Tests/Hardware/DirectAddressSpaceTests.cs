namespace DmaBuf.Simulation.Tests;

public sealed class DirectAddressSpaceTests
{
    [Fact]
    public void Map_PhysicalTable_ReturnsItUnchangedAndCostsNothing()
    {
        var soc = new TestSoc();
        var space = new DirectAddressSpace("dma", soc.Memory, soc.Stats);
        ScatterTable physical = soc.ScatteredPages(3);

        ScatterTable mapped = space.Map(physical, DmaDirection.Bidirectional);

        Assert.Same(physical, mapped);
        Assert.Equal(0, soc.Stats.MappingNs);
        Assert.Equal(0, soc.Clock.NowNs);
        Assert.Equal(1, space.LiveMappings);
        Assert.Equal(0, soc.Memory.ReachCount(TestSoc.Pfn(physical)));
    }

    [Fact]
    public void Unmap_NotMapped_ThrowsArgumentException()
    {
        var soc = new TestSoc();
        var space = new DirectAddressSpace("dma", soc.Memory, soc.Stats);
        ScatterTable physical = soc.ScatteredPages(1);
        space.Map(physical, DmaDirection.ToDevice);
        space.Unmap(physical, DmaDirection.ToDevice);

        Assert.Throws<ArgumentException>(() => space.Unmap(physical, DmaDirection.ToDevice));
    }

    [Fact]
    public void DmaWriteThenRead_PhysicalAddress_ReachesMemoryDirectly()
    {
        var soc = new TestSoc();
        var space = new DirectAddressSpace("dma", soc.Memory, soc.Stats);
        ScatterTable physical = soc.ScatteredPages(1);
        ulong address = physical.Segments[0].Address;

        Assert.True(space.DmaWrite(address + 10, [1, 2, 3]));

        Assert.Equal(2, soc.Memory.PageBytes(TestSoc.Pfn(physical))[11]);
        var back = new byte[3];
        Assert.True(space.DmaRead(address + 10, back));
        Assert.Equal([1, 2, 3], back);
    }

    [Fact]
    public void DmaRead_OutsideMemory_FaultIsRecorded()
    {
        var soc = new TestSoc();
        var space = new DirectAddressSpace("dma", soc.Memory, soc.Stats);

        Assert.False(space.DmaRead(0x1000, new byte[4]));

        Assert.Equal(1, soc.Stats.DmaFaults);
        DmaFault fault = Assert.Single(space.Faults);
        Assert.Equal(0x1000UL, fault.DeviceAddress);
        Assert.False(fault.Write);
    }

    [Fact]
    public void DmaRead_FreedPage_CountsFreedPageAccess()
    {
        var soc = new TestSoc();
        var space = new DirectAddressSpace("dma", soc.Memory, soc.Stats);
        ScatterTable physical = soc.ScatteredPages(1);
        soc.Memory.Free(TestSoc.Pfn(physical), 1);

        Assert.True(space.DmaRead(physical.Segments[0].Address, new byte[4]));

        Assert.Equal(1, soc.Stats.FreedPageAccesses);
    }
}

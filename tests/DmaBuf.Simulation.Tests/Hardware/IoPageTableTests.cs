namespace DmaBuf.Simulation.Tests;

public sealed class IoPageTableTests
{
    private const ulong Page = PhysicalMemory.PageSize;
    private const ulong Block = 2UL << 20;
    private const ulong Iova = 0x0000_7f00_0000_0000; // 2 MiB aligned, inside 48 bits
    private const ulong Pa = 0x8000_0000;             // 2 MiB aligned

    [Fact]
    public void Map_PagesAtUnalignedPhysical_WalkTranslatesEveryPage()
    {
        var table = new IoPageTable();

        long entries = table.Map(Iova, Pa + Page, 600, IommuPermissions.ReadWrite); // PA not 2 MiB aligned: no block

        Assert.Equal(600, entries);
        for (ulong i = 0; i < 600; i++)
        {
            Assert.True(table.Walk(Iova + (i * Page) + 5, out ulong pa, out ulong leaf, out bool block, out _));
            Assert.Equal(Pa + Page + (i * Page) + 5, pa);
            Assert.Equal(Pa + Page + (i * Page), leaf);
            Assert.False(block);
        }

        Assert.False(table.Walk(Iova + (600 * Page), out _, out _, out _, out _));
    }

    [Fact]
    public void Map_BothAlignedWholeBlock_WritesOneBlockEntry()
    {
        var table = new IoPageTable();

        long entries = table.Map(Iova, Pa, 512, IommuPermissions.Read);

        Assert.Equal(1, entries);
        Assert.True(table.Walk(Iova + 0x12345, out ulong pa, out ulong leaf, out bool block, out IommuPermissions permissions));
        Assert.Equal(Pa + 0x12345, pa);
        Assert.Equal(Pa, leaf);
        Assert.True(block);
        Assert.Equal(IommuPermissions.Read, permissions);
    }

    [Fact]
    public void Map_AlignedButLessThanABlock_UsesPages()
    {
        var table = new IoPageTable();
        Assert.Equal(511, table.Map(Iova, Pa, 511, IommuPermissions.ReadWrite));
    }

    [Fact]
    public void Map_IovaAndPhysicalOffsetDiffer_UsesOnlyPages()
    {
        var table = new IoPageTable();
        Assert.Equal(1024, table.Map(Iova + Page, Pa, 1024, IommuPermissions.ReadWrite));
    }

    [Fact]
    public void Map_SameOffsetInBlock_PagesUpToBoundaryThenBlockThenPages()
    {
        var table = new IoPageTable();
        Assert.Equal(1 + 1 + 511, table.Map(Iova + (511 * Page), Pa + (511 * Page), 1024, IommuPermissions.ReadWrite));
    }

    [Fact]
    public void Map_BlocksThenTail_MixesBlocksAndPages()
    {
        var table = new IoPageTable();

        long entries = table.Map(Iova, Pa, 1024 + 3, IommuPermissions.ReadWrite);

        Assert.Equal(2 + 3, entries);
        Assert.True(table.Walk(Iova + Block + 7, out _, out _, out bool inBlock, out _));
        Assert.True(inBlock);
        Assert.True(table.Walk(Iova + (2 * Block) + (2 * Page), out ulong pa, out _, out bool inPage, out _));
        Assert.False(inPage);
        Assert.Equal(Pa + (2 * Block) + (2 * Page), pa);
    }

    [Fact]
    public void Unmap_MappedRange_ClearsEveryLeafAndWalksFail()
    {
        var table = new IoPageTable();
        table.Map(Iova, Pa, 512 + 10, IommuPermissions.ReadWrite);

        long cleared = table.Unmap(Iova, 512 + 10);

        Assert.Equal(11, cleared);
        Assert.Equal(0, table.LeafEntries);
        Assert.False(table.Walk(Iova, out _, out _, out _, out _));
        Assert.False(table.Walk(Iova + Block + Page, out _, out _, out _, out _));
    }

    [Fact]
    public void Unmap_NotMapped_ThrowsInvalidOperation()
    {
        var table = new IoPageTable();
        table.Map(Iova, Pa + Page, 4, IommuPermissions.ReadWrite);

        Assert.Throws<InvalidOperationException>(() => table.Unmap(Iova + (100 * Page), 1));
        Assert.Throws<InvalidOperationException>(() => table.Unmap(Iova, 5));
    }

    [Fact]
    public void Unmap_PartOfABlock_ThrowsInvalidOperation()
    {
        var table = new IoPageTable();
        table.Map(Iova, Pa, 512, IommuPermissions.ReadWrite);
        Assert.Throws<InvalidOperationException>(() => table.Unmap(Iova, 1));
    }

    [Fact]
    public void Map_OverAMappedPage_ThrowsInvalidOperation()
    {
        var table = new IoPageTable();
        table.Map(Iova, Pa + Page, 4, IommuPermissions.ReadWrite);
        Assert.Throws<InvalidOperationException>(() => table.Map(Iova + (3 * Page), Pa, 1, IommuPermissions.ReadWrite));
    }

    [Fact]
    public void Map_BlockWhereAnEmptyPageTableWas_ReplacesTheTable()
    {
        var table = new IoPageTable();
        table.Map(Iova, Pa + Page, 8, IommuPermissions.ReadWrite);
        table.Unmap(Iova, 8);
        int tables = table.TablesInUse;

        Assert.Equal(1, table.Map(Iova, Pa, 512, IommuPermissions.ReadWrite));

        Assert.Equal(tables - 1, table.TablesInUse);
        Assert.True(table.Walk(Iova, out _, out _, out bool block, out _));
        Assert.True(block);
    }

    [Fact]
    public void Walk_OutsideFortyEightBits_Fails()
    {
        var table = new IoPageTable();
        Assert.False(table.Walk(1UL << 48, out _, out _, out _, out _));
    }
}

namespace DmaBuf.Tests;

public sealed class ScatterTableTests
{
    private static readonly ScatterTable s_table = new([new(0x1000, 0x1000), new(0x8000, 0x2000), new(0x20000, 0x1000)]);

    [Fact]
    public void GetRange_SpanningSegments_ReturnsTheCoveringRunsInOrder()
    {
        ScatterSegment[] runs = s_table.GetRange(0x800, 0x1000);

        Assert.Equal([new ScatterSegment(0x1800, 0x800), new ScatterSegment(0x8000, 0x800)], runs);
    }

    [Fact]
    public void GetRange_WholeTable_IsTheTable() =>
        Assert.Equal(s_table.Segments.ToArray(), s_table.GetRange(0, s_table.TotalLength));

    [Fact]
    public void GetRange_OutsideTheTable_Throws() =>
        Assert.Throws<ArgumentOutOfRangeException>(() => s_table.GetRange(0x3800, 0x1000));

    [Fact]
    public void Coalesced_MergesPhysicallyAdjacentRunsOnly()
    {
        var t = new ScatterTable([new(0x1000, 0x1000), new(0x2000, 0x1000), new(0x5000, 0x1000)]);

        Assert.Equal([new ScatterSegment(0x1000, 0x2000), new ScatterSegment(0x5000, 0x1000)], t.Coalesced().Segments.ToArray());
        Assert.Equal(t.TotalLength, t.Coalesced().TotalLength);
    }

    [Fact]
    public void Constructor_EmptyOrZeroLength_Throws()
    {
        Assert.Throws<ArgumentException>(() => new ScatterTable([]));
        Assert.Throws<ArgumentException>(() => new ScatterTable([new(0, 0)]));
    }
}

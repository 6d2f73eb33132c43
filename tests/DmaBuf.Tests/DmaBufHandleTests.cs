namespace DmaBuf.Tests;

public sealed class DmaBufHandleTests
{
    [Fact]
    public void CpuAccess_Balanced_ReachesExporterInOrder()
    {
        var exporter = new TestExporter();
        using DmaBufHandle handle = Make.Buffer(exporter);

        handle.BeginCpuAccess(CpuAccess.Write);
        Assert.Equal(1, handle.OpenCpuAccesses);
        handle.EndCpuAccess(CpuAccess.Write);

        Assert.Equal(0, handle.OpenCpuAccesses);
        Assert.Equal([(CpuAccess.Write, true), (CpuAccess.Write, false)], exporter.CpuCalls);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(4)]
    [InlineData(7)]
    public void BeginCpuAccess_InvalidFlags_ThrowsArgument(int flags)
    {
        var exporter = new TestExporter();
        using DmaBufHandle handle = Make.Buffer(exporter);

        ArgumentException e = Assert.Throws<ArgumentException>(() => handle.BeginCpuAccess((CpuAccess)flags));
        Assert.Contains("invalid", e.Message);
        Assert.Empty(exporter.CpuCalls);
    }

    [Fact]
    public void EndCpuAccess_WithoutBegin_ThrowsAndDoesNotReachExporter()
    {
        var exporter = new TestExporter();
        using DmaBufHandle handle = Make.Buffer(exporter);
        handle.BeginCpuAccess(CpuAccess.Read);

        Assert.Throws<InvalidOperationException>(() => handle.EndCpuAccess(CpuAccess.Write));
        Assert.Throws<InvalidOperationException>(() => handle.EndCpuAccess(CpuAccess.ReadWrite));
        handle.EndCpuAccess(CpuAccess.Read);
        Assert.Throws<InvalidOperationException>(() => handle.EndCpuAccess(CpuAccess.Read));

        Assert.Equal(2, exporter.CpuCalls.Count);
    }

    [Fact]
    public void CpuAccess_IsTrackedPerHandle()
    {
        using DmaBufHandle a = Make.Buffer(new TestExporter());
        using DmaBufHandle b = a.Duplicate();
        a.BeginCpuAccess(CpuAccess.Read);

        Assert.Throws<InvalidOperationException>(() => b.EndCpuAccess(CpuAccess.Read));
        a.EndCpuAccess(CpuAccess.Read);
    }

    [Fact]
    public void Vmap_NotSupportedByExporter_ThrowsAndLeaksNoReference()
    {
        using DmaBufHandle handle = Make.Buffer(new TestExporter());

        Assert.Throws<NotSupportedException>(() => handle.Vmap());
        Assert.Equal(1, handle.Buffer.ReferenceCount);
    }
}

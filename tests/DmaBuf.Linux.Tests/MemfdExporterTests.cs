namespace DmaBuf.Linux.Tests;

public sealed class MemfdExporterTests
{
    [Fact]
    public void Allocate_SealsAgainstShrinkGrowAndFurtherSeals()
    {
        var exporter = new MemfdExporter(new MmapCache());
        using DmaBufHandle handle = exporter.Allocate(8192, "sealed-frame");
        SafeFdHandle fd = handle.Buffer.GetLinuxBuffer().Fd;

        int seals = Interop.Libc.TryGetSeals(fd, out _);

        Assert.Equal(Interop.Libc.F_SEAL_SHRINK | Interop.Libc.F_SEAL_GROW | Interop.Libc.F_SEAL_SEAL, seals);
        Assert.Equal(Interop.Libc.EPERM, Assert.Throws<LinuxErrorException>(() => Interop.Check(Interop.Libc.ftruncate(fd, 4096), "ftruncate")).Errno);
        Assert.Equal(Interop.Libc.EPERM, Assert.Throws<LinuxErrorException>(() => Interop.Check(Interop.Libc.ftruncate(fd, 16384), "ftruncate")).Errno);
    }

    [Fact]
    public void Allocate_NamesTheMemfd()
    {
        var exporter = new MemfdExporter(new MmapCache());
        using DmaBufHandle handle = exporter.Allocate(4096, "frame-7");

        string link = Interop.Libc.FdLinkTarget(handle.Buffer.GetLinuxBuffer().Fd);

        Assert.StartsWith("/memfd:frame-7", link, StringComparison.Ordinal);
    }

    [Fact]
    public void SetName_OnAMemfd_ChangesTheBuffersName()
    {
        var exporter = new MemfdExporter(new MmapCache());
        using DmaBufHandle handle = exporter.Allocate(4096, "before");

        handle.SetName("after");

        Assert.Equal("after", handle.Buffer.Name);
    }

    [Fact]
    public void CpuAccess_OnAMemfd_NeedsNoIoctlAndStaysBalanced()
    {
        var exporter = new MemfdExporter(new MmapCache());
        using DmaBufHandle handle = exporter.Allocate(4096);

        handle.BeginCpuAccess(CpuAccess.ReadWrite);
        Assert.Equal(2, handle.OpenCpuAccesses);
        handle.EndCpuAccess(CpuAccess.ReadWrite);

        Assert.Equal(0, handle.OpenCpuAccesses);
        Assert.Throws<InvalidOperationException>(() => handle.EndCpuAccess(CpuAccess.Read));
    }
}

using DmaBuf.Testing;

namespace DmaBuf.Linux.Tests;

/// <summary>
/// What DRM PRIME promises beyond the exporter contract: one GEM handle per buffer on a card, whatever descriptor it is
/// imported through (the guarantee IGT's prime_self_import checks). Skips when no vgem card exists.
/// </summary>
[Trait(KernelRequirement.Trait, "vgem")]
public sealed class DrmPrimeExporterTests : IDisposable
{
    private DrmPrimeExporter? _created;

    /// <summary>The exporter under test; skips the test when the machine has no vgem card.</summary>
    private DrmPrimeExporter Exporter => _created ??= KernelRequirement.Vgem();

    public void Dispose() => _created?.Dispose();

    [Fact]
    public void ImportHandle_OfItsOwnBuffer_IsTheHandleItWasCreatedWith()
    {
        using DmaBufHandle handle = Exporter.Allocate(64 * 1024, "self-import");
        uint gem = Exporter.GemHandleOf(handle);
        SafeFdHandle fd = handle.Buffer.GetLinuxBuffer().Fd;
        using SafeFdHandle duplicate = Interop.Libc.Duplicate(fd);

        Assert.NotEqual(0u, gem);
        Assert.Equal(gem, Exporter.ImportHandle(fd));
        Assert.Equal(gem, Exporter.ImportHandle(duplicate)); // another descriptor of the same buffer
        Assert.Equal(gem, Exporter.ImportHandle(fd)); // and again: no new handle per import
    }

    [Fact]
    public void ImportHandle_OfTwoBuffers_GivesTwoHandles()
    {
        using DmaBufHandle a = Exporter.Allocate(4096);
        using DmaBufHandle b = Exporter.Allocate(4096);

        uint ha = Exporter.ImportHandle(a.Buffer.GetLinuxBuffer().Fd);
        uint hb = Exporter.ImportHandle(b.Buffer.GetLinuxBuffer().Fd);

        Assert.NotEqual(ha, hb);
        Assert.Equal(Exporter.GemHandleOf(a), ha);
        Assert.Equal(Exporter.GemHandleOf(b), hb);
    }

    [Fact]
    public void Release_ClosesTheGemHandle_AndNothingLeaks()
    {
        Leaks.AssertNone(() =>
        {
            DmaBufHandle handle = Exporter.Allocate(8192);
            uint gem = Exporter.GemHandleOf(handle);
            handle.Dispose();

            LinuxErrorException e = Assert.Throws<LinuxErrorException>(() => Interop.Libc.DrmGemClose(CardOf(Exporter), gem));
            Assert.Equal(Interop.Libc.EINVAL, e.Errno);
        });
    }

    [Fact]
    public void GemHandleOf_AnotherExportersBuffer_IsRefused()
    {
        var memfd = new MemfdExporter(new MmapCache(), new BufferRegistry());
        using DmaBufHandle other = memfd.Allocate(4096);

        Assert.Throws<ArgumentException>(() => Exporter.GemHandleOf(other));
    }

    [Fact]
    public void Allocate_NamesTheBufferInTheKernel()
    {
        using DmaBufHandle handle = Exporter.Allocate(4096, "prime-name");

        Assert.Equal("/dmabuf:prime-name", Interop.Libc.FdLinkTarget(handle.Buffer.GetLinuxBuffer().Fd));
    }

    [Fact]
    public void WhatOneImportWritesInsideSyncBrackets_ASecondImportReads()
    {
        const long size = 256 * 1024;
        using DmaBufHandle exported = Exporter.Allocate(size, "round-trip");
        SafeFdHandle fd = exported.Buffer.GetLinuxBuffer().Fd;
        var writerSide = new ImportCache(new MmapCache(), new BufferRegistry());
        var readerSide = new ImportCache(new MmapCache(), new BufferRegistry());
        using DmaBufHandle writer = writerSide.Import(Interop.Libc.Duplicate(fd), size);
        using DmaBufHandle reader = readerSide.Import(Interop.Libc.Duplicate(fd), size);
        byte[] expected = new byte[size];
        TestPeer.Pattern.Fill(expected, 11);

        using (CpuMapping w = writer.MapCpu())
        {
            writer.BeginCpuAccess(CpuAccess.Write);
            expected.CopyTo(w.Span);
            writer.EndCpuAccess(CpuAccess.Write);
        }

        using CpuMapping r = reader.MapCpu();
        reader.BeginCpuAccess(CpuAccess.Read);
        bool same = r.Span.SequenceEqual(expected);
        reader.EndCpuAccess(CpuAccess.Read);

        Assert.True(same, "the second import does not read what the first wrote");
        Assert.NotSame(writer.Buffer, reader.Buffer); // two importers, each with its own object and its own mmap
        Assert.Equal((1L, 1L), (writerSide.Cache.Statistics.MapCalls, readerSide.Cache.Statistics.MapCalls));
        Assert.All(new[] { writer, reader }, h => Assert.Equal(LinuxBufferKind.DmaBuf, h.Buffer.GetLinuxBuffer().Kind));
        Assert.Equal(exported.Buffer.GetLinuxBuffer().Identity, reader.Buffer.GetLinuxBuffer().Identity);
        Assert.Equal(Exporter.GemHandleOf(exported), Exporter.ImportHandle(reader.Buffer.GetLinuxBuffer().Fd));
    }

    [Theory]
    [InlineData(0x0UL)] // START with no direction
    [InlineData(0x4UL)] // END with no direction
    [InlineData(0x9UL)] // READ with an unknown bit
    [InlineData(0x100UL)] // an unknown bit only
    public void Sync_WithFlagsTheKernelDoesNotKnow_IsRefusedByTheKernel_AndTheErrorNamesTheFlags(ulong flags)
    {
        using DmaBufHandle handle = Exporter.Allocate(4096);

        LinuxErrorException e = Assert.Throws<LinuxErrorException>(
            () => Interop.Libc.DmaBufSync(handle.Buffer.GetLinuxBuffer().Fd, flags));

        Assert.Equal(Interop.Libc.EINVAL, e.Errno);
        Assert.Contains($"ioctl(DMA_BUF_IOCTL_SYNC) (flags 0x{flags:x})", e.Message, StringComparison.Ordinal);
        Assert.Contains("EINVAL", e.Message, StringComparison.Ordinal);
        handle.BeginCpuAccess(CpuAccess.ReadWrite); // the buffer is still usable with valid flags
        handle.EndCpuAccess(CpuAccess.ReadWrite);
    }

    private static SafeFdHandle CardOf(DrmPrimeExporter exporter) =>
        (SafeFdHandle)typeof(DrmPrimeExporter).GetField("_card", System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.NonPublic)!.GetValue(exporter)!;
}

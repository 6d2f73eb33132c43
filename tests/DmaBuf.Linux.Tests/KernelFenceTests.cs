using DmaBuf.Testing;

namespace DmaBuf.Linux.Tests;

/// <summary>
/// Implicit sync against a real kernel's fences: vgem's <c>VGEM_FENCE_ATTACH</c> puts an unsignaled fence on a buffer's
/// reservation object, <c>VGEM_FENCE_SIGNAL</c> signals it (drivers/gpu/drm/vgem/vgem_fence.c). Our CPU access waits for
/// it (as IGT prime_vgem's fence-wait), times out with the documented error, and proceeds after the signal; sync_files
/// exported from and imported into dma-bufs behave as IGT's dmabuf_sync_file checks; and the kernel's fences show in
/// the framework's <see cref="Fence"/>, <see cref="SyncFile"/> and <see cref="ReservationObject"/>.
/// </summary>
[Trait(KernelRequirement.Trait, "vgem")]
public sealed class KernelFenceTests : IDisposable
{
    private const long Size = 64 * 1024;
    private static readonly TimeSpan s_guard = Background<bool>.Guard;
    private readonly VgemFences _fences = new();

    private DrmPrimeExporter Exporter => _fences.Exporter;

    public void Dispose() => _fences.Dispose();

    [Fact]
    public void CpuRead_WhileAVgemWriteFenceIsPending_WaitsForTheSignal_AndSeesWhatWasWrittenBeforeIt()
    {
        using DmaBufHandle handle = Exporter.Allocate(Size, "fence-wait");
        using CpuMapping map = handle.MapCpu();
        Fill(handle, map, 0x11);
        uint fence = AttachFence(handle, write: true);

        Assert.False(handle.WaitForFences(CpuAccess.Read, TimeSpan.Zero));
        var reader = Background<byte[]>.Start(() =>
        {
            handle.BeginCpuAccess(CpuAccess.Read, s_guard);
            byte[] seen = map.Span.ToArray();
            handle.EndCpuAccess(CpuAccess.Read);
            return seen;
        });

        // Not a clock: a reader that did not wait would be done long before; one that waits cannot be done yet.
        Assert.False(reader.Wait(TimeSpan.FromMilliseconds(300)), "the CPU read did not wait for the pending write fence");
        map.Span.Fill(0x22); // the fenced writer's work, finished before it signals
        _fences.Signal(fence);

        byte[] bytes = reader.Result;
        Assert.True(bytes.All(b => b == 0x22), "the read after the signal does not see the bytes written before it");
        Assert.Equal(0, handle.OpenCpuAccesses);
    }

    [Fact]
    public void CpuAccess_WhileAFenceNeverSignals_TimesOutWithTheDocumentedError_ThenProceedsAfterTheSignal()
    {
        using DmaBufHandle handle = Exporter.Allocate(Size, "fence-timeout");
        uint fence = AttachFence(handle, write: true);

        TimeoutException e = Assert.Throws<TimeoutException>(() => handle.BeginCpuAccess(CpuAccess.Read, TimeSpan.FromMilliseconds(200)));

        Assert.Contains("CPU Read access to " + handle.Buffer, e.Message, StringComparison.Ordinal);
        Assert.Contains("waited 200 ms for kernel fences that did not signal", e.Message, StringComparison.Ordinal);
        Assert.Contains("1 pending (vgem ", e.Message, StringComparison.Ordinal);
        Assert.Contains("Nothing was begun", e.Message, StringComparison.Ordinal);
        Assert.Equal(0, handle.OpenCpuAccesses);

        _fences.Signal(fence);
        handle.BeginCpuAccess(CpuAccess.Write, s_guard);
        handle.EndCpuAccess(CpuAccess.Write);
    }

    [Fact]
    public void Poll_AReadFence_HoldsWritersOnly_AWriteFenceHoldsEveryone()
    {
        using DmaBufHandle handle = Exporter.Allocate(Size);
        uint read = AttachFence(handle, write: false);

        Assert.True(handle.WaitForFences(CpuAccess.Read, TimeSpan.Zero)); // readers do not wait for readers
        Assert.False(handle.WaitForFences(CpuAccess.Write, TimeSpan.Zero));
        Assert.False(handle.WaitForFences(CpuAccess.ReadWrite, TimeSpan.Zero));
        _fences.Signal(read);
        Assert.True(handle.WaitForFences(CpuAccess.Write, s_guard));

        uint write = AttachFence(handle, write: true);
        Assert.False(handle.WaitForFences(CpuAccess.Read, TimeSpan.Zero));
        Assert.False(handle.WaitForFences(CpuAccess.Write, TimeSpan.Zero));
        _fences.Signal(write);
        Assert.True(handle.WaitForFences(CpuAccess.Read, s_guard));
    }

    // IGT dmabuf_sync_file, export-basic: the exported file holds the pending fence and signals with it.
    [Fact]
    public void ExportSyncFile_OfAPendingWriteFence_SignalsWithIt()
    {
        using DmaBufHandle handle = Exporter.Allocate(Size);
        uint fence = AttachFence(handle, write: true);

        using KernelSyncFile read = handle.ExportSyncFile(CpuAccess.Read);
        using KernelSyncFile write = handle.ExportSyncFile(CpuAccess.Write);

        Assert.False(read.IsSignaled);
        Assert.False(write.IsSignaled);
        Assert.Equal(0, read.Status);
        KernelFenceInfo info = Assert.Single(read.Fences);
        Assert.Equal("vgem", info.Driver);
        Assert.Equal(0, info.Status);
        _fences.Signal(fence);
        Assert.True(read.Wait(s_guard));
        Assert.True(write.Wait(s_guard));
        Assert.Equal(1, read.Status);
        Assert.True(Assert.Single(read.Fences).TimestampNs > 0);
    }

    // export-before-signal: an export is a snapshot; a fence attached after it is not in it.
    [Fact]
    public void ExportSyncFile_BeforeAFenceIsAttached_IsSignaled_AndStaysSo()
    {
        using DmaBufHandle handle = Exporter.Allocate(Size);
        using KernelSyncFile before = handle.ExportSyncFile(CpuAccess.ReadWrite);

        uint fence = AttachFence(handle, write: true);
        using KernelSyncFile after = handle.ExportSyncFile(CpuAccess.ReadWrite);

        Assert.True(before.IsSignaled);
        Assert.False(after.IsSignaled);
        _fences.Signal(fence);
        Assert.True(after.Wait(s_guard));
    }

    // export-multiwait: a reader's export skips read fences; a writer's holds them.
    [Fact]
    public void ExportSyncFile_OfAReadFence_HoldsOnlyTheWritersExport()
    {
        using DmaBufHandle handle = Exporter.Allocate(Size);
        uint fence = AttachFence(handle, write: false);

        using KernelSyncFile forReader = handle.ExportSyncFile(CpuAccess.Read);
        using KernelSyncFile forWriter = handle.ExportSyncFile(CpuAccess.Write);

        Assert.True(forReader.IsSignaled);
        Assert.False(forWriter.IsSignaled);
        _fences.Signal(fence);
        Assert.True(forWriter.Wait(s_guard));
    }

    // export-wait-after-attach: several exports of one pending fence all wait for it, and a later export is clear.
    [Fact]
    public void ExportSyncFile_SeveralOfOneFence_AllSignalWithIt_ALaterOneIsClear()
    {
        using DmaBufHandle handle = Exporter.Allocate(Size);
        uint fence = AttachFence(handle, write: true);
        KernelSyncFile[] exports = [.. Enumerable.Range(0, 4).Select(_ => handle.ExportSyncFile(CpuAccess.Read))];
        try
        {
            Assert.All(exports, s => Assert.False(s.IsSignaled));
            _fences.Signal(fence);
            Assert.All(exports, s => Assert.True(s.Wait(s_guard)));
            using KernelSyncFile later = handle.ExportSyncFile(CpuAccess.ReadWrite);
            Assert.True(later.IsSignaled);
        }
        finally
        {
            foreach (KernelSyncFile s in exports)
            {
                s.Dispose();
            }
        }
    }

    // import-basic: a sync_file put on another buffer as a write fence holds its readers and writers.
    [Fact]
    public void ImportSyncFile_AsWrite_HoldsEveryAccessToTheOtherBuffer_AsReadOnlyItsWriters()
    {
        using DmaBufHandle source = Exporter.Allocate(Size);
        using DmaBufHandle target = Exporter.Allocate(Size);
        using DmaBufHandle readTarget = Exporter.Allocate(Size);
        uint fence = AttachFence(source, write: true);
        using KernelSyncFile file = source.ExportSyncFile(CpuAccess.Read);

        target.ImportSyncFile(file, CpuAccess.Write);
        readTarget.ImportSyncFile(file, CpuAccess.Read);

        Assert.False(target.WaitForFences(CpuAccess.Read, TimeSpan.Zero));
        Assert.True(readTarget.WaitForFences(CpuAccess.Read, TimeSpan.Zero));
        Assert.False(readTarget.WaitForFences(CpuAccess.Write, TimeSpan.Zero));
        _fences.Signal(fence);
        Assert.True(target.WaitForFences(CpuAccess.ReadWrite, s_guard));
        Assert.True(readTarget.WaitForFences(CpuAccess.ReadWrite, s_guard));
    }

    // import-multiple-read-only and import-multiple-read-write: each imported fence holds until it signals.
    [Theory]
    [InlineData(CpuAccess.Read)]
    [InlineData(CpuAccess.ReadWrite)]
    public void ImportSyncFile_TwoFences_TheBufferIsClearOnlyOnceBothSignaled(CpuAccess importAs)
    {
        using DmaBufHandle a = Exporter.Allocate(Size);
        using DmaBufHandle b = Exporter.Allocate(Size);
        using DmaBufHandle target = Exporter.Allocate(Size);
        uint fa = AttachFence(a, write: true);
        uint fb = AttachFence(b, write: true);
        using (KernelSyncFile sa = a.ExportSyncFile(CpuAccess.Read))
        using (KernelSyncFile sb = b.ExportSyncFile(CpuAccess.Read))
        {
            target.ImportSyncFile(sa, importAs);
            target.ImportSyncFile(sb, importAs);
        }

        bool readersWait = importAs != CpuAccess.Read;
        Assert.Equal(!readersWait, target.WaitForFences(CpuAccess.Read, TimeSpan.Zero));
        Assert.False(target.WaitForFences(CpuAccess.Write, TimeSpan.Zero));
        _fences.Signal(fa);
        Assert.True(a.WaitForFences(CpuAccess.Write, s_guard));
        Assert.False(target.WaitForFences(CpuAccess.Write, TimeSpan.Zero)); // b's fence still holds it
        _fences.Signal(fb);
        Assert.True(target.WaitForFences(CpuAccess.Write, s_guard));
        Assert.True(target.WaitForFences(CpuAccess.Read, TimeSpan.Zero));
    }

    [Fact]
    public void Merge_OfTwoFences_SignalsWhenBothHave()
    {
        using DmaBufHandle a = Exporter.Allocate(Size);
        using DmaBufHandle b = Exporter.Allocate(Size);
        uint fa = AttachFence(a, write: true);
        uint fb = AttachFence(b, write: true);
        using KernelSyncFile sa = a.ExportSyncFile(CpuAccess.Read);
        using KernelSyncFile sb = b.ExportSyncFile(CpuAccess.Read);

        using KernelSyncFile merged = KernelSyncFile.Merge(sa, sb, "both");

        Assert.Equal("both", merged.Name);
        Assert.Equal(2, merged.Fences.Count);
        _fences.Signal(fa);
        Assert.True(sa.Wait(s_guard));
        Assert.False(merged.IsSignaled);
        _fences.Signal(fb);
        Assert.True(merged.Wait(s_guard));
    }

    [Fact]
    public void ImportKernelFences_PutsTheKernelsFenceInTheFrameworkReservation_WhichSignalsWithIt()
    {
        using DmaBufHandle handle = Exporter.Allocate(Size);
        uint fence = AttachFence(handle, write: true);

        Fence framework = handle.ImportKernelFences(CpuAccess.Read);

        Assert.False(framework.IsSignaled);
        Assert.StartsWith("vgem:", framework.Context.Name, StringComparison.Ordinal);
        Assert.False(handle.Buffer.Resv.Test(FenceUsage.Read));
        Assert.False(handle.Buffer.Resv.Wait(FenceUsage.Write, TimeSpan.Zero, TestContext.Current.CancellationToken));
        _fences.Signal(fence);
        Assert.True(handle.Buffer.Resv.Wait(FenceUsage.Read, s_guard, TestContext.Current.CancellationToken));
        Assert.Equal(1, framework.Status);
    }

    [Fact]
    public void FromDescriptor_OfSomethingThatIsNotASyncFile_IsRefusedAndClosed()
    {
        using DmaBufHandle handle = Exporter.Allocate(Size);

        Leaks.AssertNone(() =>
        {
            SafeFdHandle notASyncFile = Interop.Libc.Duplicate(handle.Buffer.GetLinuxBuffer().Fd);
            ArgumentException e = Assert.Throws<ArgumentException>(() => KernelSyncFile.FromDescriptor(notASyncFile));
            Assert.Contains("is not a sync_file", e.Message, StringComparison.Ordinal);
            Assert.True(notASyncFile.IsClosed);
        });
    }

    [Fact]
    public void Memfd_HasNoKernelFences_WaitsReturnAndExportsAreRefused()
    {
        var memfd = new MemfdExporter(new MmapCache(), new BufferRegistry());
        using DmaBufHandle handle = memfd.Allocate(4096);

        Assert.True(handle.WaitForFences(CpuAccess.ReadWrite, TimeSpan.Zero));
        Assert.Throws<NotSupportedException>(() => handle.ExportSyncFile(CpuAccess.Read));
        Assert.Throws<ArgumentException>(() => handle.WaitForFences((CpuAccess)0, TimeSpan.Zero));
    }

    private uint AttachFence(DmaBufHandle handle, bool write) => _fences.Attach(handle, write);

    private static void Fill(DmaBufHandle handle, CpuMapping map, byte value)
    {
        handle.BeginCpuAccess(CpuAccess.Write);
        map.Span.Fill(value);
        handle.EndCpuAccess(CpuAccess.Write);
    }
}

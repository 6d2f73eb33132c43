namespace DmaBuf.Tests;

// Ports of IGT's tests/dmabuf_sync_file.c. vgem's fence attach becomes a fence on a fresh context added to the buffer's
// reservation object (write usage for VGEM_FENCE_WRITE, read usage otherwise); sw_sync timelines become FenceTimeline;
// poll() on the dma-buf becomes ReservationObject.Test with the implicit-sync usage of the access.
public sealed class SyncFileTests
{
    private static Fence Attach(DmaBuffer buffer, bool write)
    {
        var fence = new Fence(FenceContext.Allocate("vgem"), 1);
        using OrderedLock.Scope scope = buffer.Resv.Lock.Enter();
        buffer.Resv.Reserve(1);
        buffer.Resv.AddFence(fence, write ? FenceUsage.Write : FenceUsage.Read);
        return fence;
    }

    private static FenceUsage AccessOf(CpuAccess access) => (access & CpuAccess.Write) != 0 ? FenceUsage.Write : FenceUsage.Read;

    // dmabuf_busy: poll() for the access would block.
    private static bool Busy(DmaBuffer buffer, CpuAccess access) =>
        !buffer.Resv.Test(ReservationObject.UsageForAccess(write: (access & CpuAccess.Write) != 0));

    // dmabuf_sync_file_busy: a sync file exported for the access is not yet signaled.
    private static bool SyncFileBusy(DmaBuffer buffer, CpuAccess access) => !SyncFile.Export(buffer.Resv, AccessOf(access)).IsSignaled;

    private static void ImportTimelineFence(DmaBuffer buffer, CpuAccess access, FenceTimeline timeline, ulong seqno)
    {
        Fence fence = timeline.Find(seqno) ?? throw new InvalidOperationException("no such fence");
        buffer.Resv.Import(SyncFile.Create(fence), AccessOf(access));
    }

    private static void AssertBusy(DmaBuffer buffer, bool read, bool write)
    {
        Assert.Equal(read, Busy(buffer, CpuAccess.Read));
        Assert.Equal(write, Busy(buffer, CpuAccess.Write));
        Assert.Equal(read || write, Busy(buffer, CpuAccess.ReadWrite));
        Assert.Equal(read, SyncFileBusy(buffer, CpuAccess.Read));
        Assert.Equal(write, SyncFileBusy(buffer, CpuAccess.Write));
        Assert.Equal(read || write, SyncFileBusy(buffer, CpuAccess.ReadWrite));
    }

    // IGT dmabuf_sync_file: export-basic
    [Fact]
    public void Export_Basic_ReadFenceBlocksWritersOnly_WriteFenceBlocksEveryone()
    {
        using DmaBufHandle handle = Make.Buffer(new TestExporter());
        DmaBuffer buffer = handle.Buffer;
        AssertBusy(buffer, read: false, write: false);

        Fence read = Attach(buffer, write: false);
        AssertBusy(buffer, read: false, write: true);

        read.Signal();
        AssertBusy(buffer, read: false, write: false);

        Fence write = Attach(buffer, write: true);
        AssertBusy(buffer, read: true, write: true);

        write.Signal();
        AssertBusy(buffer, read: false, write: false);
    }

    // IGT dmabuf_sync_file: export-before-signal
    [Fact]
    public void Export_BeforeSignal_SyncFilesSignalWithTheirFences()
    {
        using DmaBufHandle handle = Make.Buffer(new TestExporter());
        DmaBuffer buffer = handle.Buffer;
        Assert.True(SyncFile.Export(buffer.Resv, FenceUsage.Read).IsSignaled);
        Assert.True(SyncFile.Export(buffer.Resv, FenceUsage.Write).IsSignaled);

        Fence fence = Attach(buffer, write: false);
        SyncFile forRead = SyncFile.Export(buffer.Resv, FenceUsage.Read);
        SyncFile forWrite = SyncFile.Export(buffer.Resv, FenceUsage.Write);
        Assert.True(forRead.IsSignaled);
        Assert.False(forWrite.IsSignaled);

        fence.Signal();
        Assert.True(forRead.IsSignaled);
        Assert.True(forWrite.IsSignaled);

        fence = Attach(buffer, write: true);
        forRead = SyncFile.Export(buffer.Resv, FenceUsage.Read);
        forWrite = SyncFile.Export(buffer.Resv, FenceUsage.Write);
        Assert.False(forRead.IsSignaled);
        Assert.False(forWrite.IsSignaled);

        fence.Signal();
        Assert.True(forRead.IsSignaled);
        Assert.True(forWrite.IsSignaled);
    }

    // IGT dmabuf_sync_file: export-multiwait
    [Fact]
    public void Export_MultipleFences_SignalsOnlyWhenAllExportedOnesHave()
    {
        using DmaBufHandle handle = Make.Buffer(new TestExporter());
        DmaBuffer buffer = handle.Buffer;
        Fence fence1 = Attach(buffer, write: false);
        Fence fence2 = Attach(buffer, write: false);

        SyncFile syncFile = SyncFile.Export(buffer.Resv, FenceUsage.Write);
        Fence fence3 = Attach(buffer, write: false);

        Assert.Equal(2, syncFile.Fences.Count);
        Assert.False(syncFile.IsSignaled);
        fence1.Signal();
        Assert.False(syncFile.IsSignaled);
        Assert.Equal(0, syncFile.Status);
        fence2.Signal();
        Assert.True(syncFile.IsSignaled);
        Assert.Equal(1, syncFile.Status);
        Assert.False(fence3.IsSignaled);
    }

    // IGT dmabuf_sync_file: export-wait-after-attach
    [Fact]
    public void Export_FencesAttachedAfterExport_AreNotInTheSnapshot()
    {
        using DmaBufHandle handle = Make.Buffer(new TestExporter());
        DmaBuffer buffer = handle.Buffer;
        SyncFile forRead = SyncFile.Export(buffer.Resv, FenceUsage.Read);
        SyncFile forWrite = SyncFile.Export(buffer.Resv, FenceUsage.Write);

        Fence fence1 = Attach(buffer, write: true);
        Assert.True(forRead.IsSignaled);
        Assert.True(forWrite.IsSignaled);

        // These wait on fence1.
        forRead = SyncFile.Export(buffer.Resv, FenceUsage.Read);
        forWrite = SyncFile.Export(buffer.Resv, FenceUsage.Write);
        Assert.False(forRead.IsSignaled);
        Assert.False(forWrite.IsSignaled);

        fence1.Signal();
        Fence fence2 = Attach(buffer, write: true);

        // fence1 has signaled; fence2 has not.
        Assert.True(forRead.IsSignaled);
        Assert.True(forWrite.IsSignaled);
        Assert.True(SyncFileBusy(buffer, CpuAccess.Read));
        Assert.True(SyncFileBusy(buffer, CpuAccess.Write));
        fence2.Signal();
    }

    // IGT dmabuf_sync_file: import-basic
    [Fact]
    public void Import_Basic_ReadThenWriteThenReadWriteFences()
    {
        using DmaBufHandle handle = Make.Buffer(new TestExporter());
        DmaBuffer buffer = handle.Buffer;
        AssertBusy(buffer, read: false, write: false);
        var timeline = new FenceTimeline("sw_sync");
        for (int i = 0; i < 3; i++)
        {
            timeline.CreateFence();
        }

        ImportTimelineFence(buffer, CpuAccess.Read, timeline, 1);
        AssertBusy(buffer, read: false, write: true);
        timeline.SignalUpTo(1);
        AssertBusy(buffer, read: false, write: false);

        ImportTimelineFence(buffer, CpuAccess.Write, timeline, 2);
        AssertBusy(buffer, read: true, write: true);
        timeline.SignalUpTo(2);
        AssertBusy(buffer, read: false, write: false);

        ImportTimelineFence(buffer, CpuAccess.ReadWrite, timeline, 3);
        AssertBusy(buffer, read: true, write: true);
        timeline.SignalUpTo(3);
        AssertBusy(buffer, read: false, write: false);
    }

    // IGT dmabuf_sync_file: import-multiple-read-only and import-multiple-read-write
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Import_MultipleReadFences_BlockWritersOnly_UnlessAWriteFenceIsImportedToo(bool write)
    {
        using DmaBufHandle handle = Make.Buffer(new TestExporter());
        DmaBuffer buffer = handle.Buffer;
        AssertBusy(buffer, read: false, write: false);
        var readTimelines = new FenceTimeline[32];
        for (int i = 0; i < readTimelines.Length; i++)
        {
            readTimelines[i] = new FenceTimeline($"read-{i}");
            readTimelines[i].CreateFence();
            ImportTimelineFence(buffer, CpuAccess.Read, readTimelines[i], 1);
        }

        FenceTimeline? writeTimeline = null;
        if (write)
        {
            writeTimeline = new FenceTimeline("write");
            writeTimeline.CreateFence();
            ImportTimelineFence(buffer, CpuAccess.Write, writeTimeline, 1);
        }

        SyncFile forRead = SyncFile.Export(buffer.Resv, FenceUsage.Read);
        SyncFile forWrite = SyncFile.Export(buffer.Resv, FenceUsage.Write);
        Assert.Equal(write ? 33 : 32, forWrite.Fences.Count);

        for (int i = readTimelines.Length - 1; i >= 0; i--)
        {
            Assert.Equal(write, Busy(buffer, CpuAccess.Read));
            Assert.Equal(write, !forRead.IsSignaled);
            Assert.True(Busy(buffer, CpuAccess.Write));
            Assert.False(forWrite.IsSignaled);
            readTimelines[i].SignalUpTo(1);
        }

        Assert.Equal(write, Busy(buffer, CpuAccess.Read));
        Assert.Equal(write, !forRead.IsSignaled);
        Assert.Equal(write, Busy(buffer, CpuAccess.Write));
        Assert.Equal(write, !forWrite.IsSignaled);

        writeTimeline?.SignalUpTo(1);

        AssertBusy(buffer, read: false, write: false);
        Assert.True(forRead.IsSignaled);
        Assert.True(forWrite.IsSignaled);
    }

    [Fact]
    public void Import_UsageOtherThanReadOrWrite_Throws()
    {
        var resv = new ReservationObject();
        SyncFile file = SyncFile.Create(new Fence(FenceContext.Allocate("x"), 1));

        Assert.Throws<ArgumentOutOfRangeException>(() => resv.Import(file, FenceUsage.Kernel));
        Assert.Throws<ArgumentOutOfRangeException>(() => resv.Import(file, FenceUsage.Read | FenceUsage.Write));
        Assert.Equal(0, resv.Count);
    }

    [Fact]
    public void Import_DoesNotUseTheCallersReservedSlots()
    {
        var resv = new ReservationObject();
        resv.Reserve(1);

        resv.Import(SyncFile.Create([new Fence(FenceContext.Allocate("a"), 1), new Fence(FenceContext.Allocate("b"), 1)]), FenceUsage.Read);

        Assert.Equal(1, resv.ReservedSlots);
        Assert.Equal(2, resv.Count);
    }

    [Fact]
    public void Export_AccessOtherThanReadOrWrite_Throws()
    {
        var resv = new ReservationObject();

        Assert.Throws<ArgumentOutOfRangeException>(() => SyncFile.Export(resv, FenceUsage.Bookkeep));
        Assert.Throws<ArgumentOutOfRangeException>(() => SyncFile.Export(resv, FenceUsage.Kernel));
    }

    [Fact]
    public void Export_KernelAndBookkeepFences_KernelIsExportedBookkeepNever()
    {
        var resv = new ReservationObject();
        Fence kernel = new(FenceContext.Allocate("move"), 1);
        Fence bookkeep = new(FenceContext.Allocate("vm"), 1);
        resv.Reserve(2);
        resv.AddFence(kernel, FenceUsage.Kernel);
        resv.AddFence(bookkeep, FenceUsage.Bookkeep);

        Assert.Same(kernel, Assert.Single(SyncFile.Export(resv, FenceUsage.Read).Fences));
        Assert.Same(kernel, Assert.Single(SyncFile.Export(resv, FenceUsage.Write).Fences));
    }

    [Fact]
    public void Create_NoFences_IsSignaled()
    {
        SyncFile empty = SyncFile.Create([]);

        Assert.Empty(empty.Fences);
        Assert.True(empty.IsSignaled);
        Assert.Equal(1, empty.Status);
        Assert.True(empty.Wait(TimeSpan.Zero, TestContext.Current.CancellationToken));
    }

    [Fact]
    public void Merge_KeepsLatestFencePerContextAndLeavesInputsAlone()
    {
        var ring = new FenceTimeline("ring");
        Fence early = ring.CreateFence();
        Fence late = ring.CreateFence();
        Fence other = new(FenceContext.Allocate("other"), 7);
        SyncFile a = SyncFile.Create([early, other]);
        SyncFile b = SyncFile.Create(late);

        SyncFile merged = SyncFile.Merge(a, b);

        Assert.Equal([late, other], merged.Fences.OrderBy(f => f.Context.Id));
        Assert.Equal([early, other], a.Fences);
        Assert.Same(late, Assert.Single(b.Fences));
        Assert.Same(late, Assert.Single(SyncFile.Merge(b, SyncFile.Create(early)).Fences));
    }

    [Fact]
    public void Status_OneFenceFailed_ZeroWhilePendingThenTheError()
    {
        Fence ok = new(FenceContext.Allocate("a"), 1);
        Fence failed = new(FenceContext.Allocate("b"), 1);
        SyncFile file = SyncFile.Create([ok, failed]);

        failed.SignalWithError(FenceError.IO);
        Assert.Equal(0, file.Status);

        ok.Signal();
        Assert.Equal(FenceError.IO, file.Status);
        Assert.True(file.IsSignaled);
    }

    [Fact]
    public async Task Wait_FencesSignaledByAnotherThread_TrueAfterTimeoutFalse()
    {
        var ring = new FenceTimeline("ring");
        SyncFile file = SyncFile.Create([ring.CreateFence(), new Fence(FenceContext.Allocate("x"), 1)]);
        Assert.False(file.Wait(TimeSpan.FromMilliseconds(5), TestContext.Current.CancellationToken));
        Assert.False(await file.WaitAsync(TimeSpan.FromMilliseconds(5), TestContext.Current.CancellationToken));

        Task<bool> waiting = file.WaitAsync(Timeout.InfiniteTimeSpan, TestContext.Current.CancellationToken);
        Task signaler = Task.Run(() =>
        {
            ring.SignalUpTo(1);
            file.Fences[1].Signal();
        }, TestContext.Current.CancellationToken);

        Assert.True(file.Wait(Timeout.InfiniteTimeSpan, TestContext.Current.CancellationToken));
        Assert.True(await waiting);
        await signaler;
    }
}

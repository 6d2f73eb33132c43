namespace DmaBuf.Tests;

// Ports of the kernel's drivers/dma-buf/st-dma-resv.c (signaling, for_each, get_fences), once per usage class instead
// of the old exclusive/shared pair, plus the reservation rules of dma-resv.c.
public sealed class ReservationObjectTests
{
    public static TheoryData<FenceUsage> Usages => [FenceUsage.Kernel, FenceUsage.Write, FenceUsage.Read, FenceUsage.Bookkeep];

    private static readonly FenceUsage[] s_all = [FenceUsage.Kernel, FenceUsage.Write, FenceUsage.Read, FenceUsage.Bookkeep];

    private static Fence NewFence(ulong seqno = 1) => new(FenceContext.Allocate("selftest"), seqno);

    private static ReservationObject With(Fence fence, FenceUsage usage)
    {
        var resv = new ReservationObject();
        resv.Reserve(1);
        resv.AddFence(fence, usage);
        return resv;
    }

    // st-dma-resv: test_signaling
    [Theory]
    [MemberData(nameof(Usages))]
    public void Test_FenceOfUsage_UnsignaledForThatClassAndAboveUntilSignal(FenceUsage usage)
    {
        Fence f = NewFence();
        ReservationObject resv = With(f, usage);

        foreach (FenceUsage asked in s_all)
        {
            // Asking for a class sees that class and every class before it.
            Assert.Equal(asked < usage, resv.Test(asked));
        }

        f.Signal();

        foreach (FenceUsage asked in s_all)
        {
            Assert.True(resv.Test(asked));
        }
    }

    // st-dma-resv: test_for_each
    [Theory]
    [MemberData(nameof(Usages))]
    public void GetEntries_FenceOfUsage_YieldsItOnceWithItsUsage(FenceUsage usage)
    {
        Fence f = NewFence();
        ReservationObject resv = With(f, usage);

        ReservationFence entry = Assert.Single(resv.GetEntries(FenceUsage.Bookkeep));

        Assert.Same(f, entry.Fence);
        Assert.Equal(usage, entry.Usage);
        f.Signal();
        Assert.Empty(resv.GetEntries(FenceUsage.Bookkeep));
    }

    // st-dma-resv: test_get_fences
    [Theory]
    [MemberData(nameof(Usages))]
    public void GetFences_FenceOfUsage_ReturnedForThatClassAndAbove(FenceUsage usage)
    {
        Fence f = NewFence();
        ReservationObject resv = With(f, usage);

        foreach (FenceUsage asked in s_all)
        {
            IReadOnlyList<Fence> fences = resv.GetFences(asked);
            if (asked >= usage)
            {
                Assert.Same(f, Assert.Single(fences));
            }
            else
            {
                Assert.Empty(fences);
            }
        }
    }

    [Fact]
    public void GetFences_Snapshot_DoesNotChangeWhenFencesAreAdded()
    {
        Fence first = NewFence();
        ReservationObject resv = With(first, FenceUsage.Write);
        IReadOnlyList<Fence> snapshot = resv.GetFences(FenceUsage.Read);

        resv.Reserve(1);
        resv.AddFence(NewFence(), FenceUsage.Write);

        Assert.Same(first, Assert.Single(snapshot));
        Assert.Equal(2, resv.GetFences(FenceUsage.Read).Count);
    }

    [Fact]
    public void AddFence_WithoutReservedSlot_ThrowsInvalidOperation()
    {
        var resv = new ReservationObject();

        Assert.Throws<InvalidOperationException>(() => resv.AddFence(NewFence(), FenceUsage.Write));
        Assert.Equal(0, resv.Count);
    }

    [Fact]
    public void AddFence_EachCallUsesOneSlot_AndReservationsDoNotAddUp()
    {
        var resv = new ReservationObject();
        resv.Reserve(1);
        resv.Reserve(1);
        Assert.Equal(1, resv.ReservedSlots);

        resv.AddFence(NewFence(), FenceUsage.Read);

        Assert.Equal(0, resv.ReservedSlots);
        Assert.Throws<InvalidOperationException>(() => resv.AddFence(NewFence(), FenceUsage.Read));
        resv.Reserve(2);
        resv.AddFence(NewFence(), FenceUsage.Read);
        resv.AddFence(NewFence(), FenceUsage.Read);
        Assert.Equal(3, resv.Count);
    }

    [Fact]
    public void Reserve_Negative_Throws()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new ReservationObject().Reserve(-1));
    }

    [Fact]
    public void AddFence_LaterFenceOfSameContextAndUsage_ReplacesTheOlderOne()
    {
        var timeline = new FenceTimeline("ring");
        Fence older = timeline.CreateFence();
        Fence newer = timeline.CreateFence();
        ReservationObject resv = With(older, FenceUsage.Write);

        resv.Reserve(1);
        resv.AddFence(newer, FenceUsage.Write);

        Assert.Same(newer, Assert.Single(resv.GetFences(FenceUsage.Bookkeep)));
    }

    [Fact]
    public void AddFence_SameContextStrongerUsage_ReplacesWeakerEntry()
    {
        var timeline = new FenceTimeline("ring");
        Fence read = timeline.CreateFence();
        Fence write = timeline.CreateFence();
        ReservationObject resv = With(read, FenceUsage.Read);

        resv.Reserve(1);
        resv.AddFence(write, FenceUsage.Write);

        ReservationFence entry = Assert.Single(resv.GetEntries(FenceUsage.Bookkeep));
        Assert.Equal(new ReservationFence(write, FenceUsage.Write), entry);
    }

    [Fact]
    public void AddFence_SameContextWeakerUsage_KeepsBoth()
    {
        var timeline = new FenceTimeline("ring");
        Fence write = timeline.CreateFence();
        Fence read = timeline.CreateFence();
        ReservationObject resv = With(write, FenceUsage.Write);

        resv.Reserve(1);
        resv.AddFence(read, FenceUsage.Read);

        // A reader only needs the write fence, a writer both.
        Assert.Same(write, Assert.Single(resv.GetFences(FenceUsage.Write)));
        Assert.Equal([write, read], resv.GetFences(FenceUsage.Read));
    }

    [Fact]
    public void AddFence_EarlierFenceOfSameContext_DoesNotReplaceTheLaterOne()
    {
        var timeline = new FenceTimeline("ring");
        Fence early = timeline.CreateFence();
        Fence late = timeline.CreateFence();
        ReservationObject resv = With(late, FenceUsage.Write);

        resv.Reserve(1);
        resv.AddFence(early, FenceUsage.Write);

        Assert.Equal([late, early], resv.GetFences(FenceUsage.Write));
    }

    [Fact]
    public void AddFence_OtherContexts_AreAllKept()
    {
        var resv = new ReservationObject();
        resv.Reserve(3);
        Fence a = NewFence(), b = NewFence(), c = NewFence();
        resv.AddFence(a, FenceUsage.Read);
        resv.AddFence(b, FenceUsage.Read);
        resv.AddFence(c, FenceUsage.Read);

        Assert.Equal([a, b, c], resv.GetFences(FenceUsage.Read));
    }

    [Fact]
    public void AddFence_SignaledEntry_ItsSlotIsReused()
    {
        Fence done = NewFence();
        ReservationObject resv = With(done, FenceUsage.Write);
        done.Signal();
        Fence next = NewFence();

        resv.Reserve(1);
        resv.AddFence(next, FenceUsage.Read);

        ReservationFence entry = Assert.Single(resv.GetEntries(FenceUsage.Bookkeep));
        Assert.Equal(new ReservationFence(next, FenceUsage.Read), entry);
    }

    [Fact]
    public void Count_SignaledFences_ArePruned()
    {
        var resv = new ReservationObject();
        resv.Reserve(2);
        Fence a = NewFence(), b = NewFence();
        resv.AddFence(a, FenceUsage.Write);
        resv.AddFence(b, FenceUsage.Read);
        Assert.Equal(2, resv.Count);

        a.Signal();

        Assert.Equal(1, resv.Count);
    }

    [Fact]
    public void Usage_OutOfRange_Throws()
    {
        var resv = new ReservationObject();
        resv.Reserve(1);

        Assert.Throws<ArgumentOutOfRangeException>(() => resv.AddFence(NewFence(), (FenceUsage)4));
        Assert.Throws<ArgumentOutOfRangeException>(() => resv.GetFences((FenceUsage)(-1)));
        Assert.Throws<ArgumentOutOfRangeException>(() => resv.Test((FenceUsage)9));
    }

    [Fact]
    public void UsageForAccess_Write_WaitsForReadersToo()
    {
        Assert.Equal(FenceUsage.Read, ReservationObject.UsageForAccess(write: true));
        Assert.Equal(FenceUsage.Write, ReservationObject.UsageForAccess(write: false));
    }

    [Fact]
    public void Constructor_NoLock_CreatesBufferLevelLock()
    {
        var resv = new ReservationObject();

        Assert.Equal(LockLevel.Buffer, resv.Lock.Level);
        Assert.Equal("resv", resv.Lock.Name);
    }

    [Fact]
    public void Constructor_LockOfAnotherLevel_Throws()
    {
        Assert.Throws<ArgumentException>(() => new ReservationObject(new OrderedLock(LockLevel.AddressSpace, "as")));
    }

    [Fact]
    public void Buffer_LockIsTheReservationLock()
    {
        using DmaBufHandle handle = Make.Buffer(new TestExporter());
        DmaBuffer buffer = handle.Buffer;

        Assert.Same(buffer.Resv.Lock, buffer.Lock);
        using (buffer.Lock.Enter())
        {
            Assert.True(buffer.Resv.Lock.IsHeldByCurrentThread);
            // Re-entrant: a caller holding the buffer lock can reserve and add in one critical section.
            buffer.Resv.Reserve(1);
            buffer.Resv.AddFence(NewFence(), FenceUsage.Kernel);
        }

        Assert.Equal(1, buffer.Resv.Count);
    }

    [Fact]
    public void HoldingReservationLock_TakingRegistryLock_IsCaught()
    {
        var registry = new BufferRegistry();
        using DmaBufHandle handle = Make.Buffer(new TestExporter(), registry);

        using (handle.Buffer.Resv.Lock.Enter())
        {
            Assert.Throws<LockOrderException>(() => registry.List());
        }
    }

    [Fact]
    public void Registry_List_CountsUnsignaledFencesAndShowsThem()
    {
        var registry = new BufferRegistry();
        using DmaBufHandle handle = Make.Buffer(new TestExporter(), registry, name: "fenced");
        ReservationObject resv = handle.Buffer.Resv;
        Fence write = NewFence(), read = NewFence();
        resv.Reserve(2);
        resv.AddFence(write, FenceUsage.Write);
        resv.AddFence(read, FenceUsage.Read);

        Assert.Equal(2, Assert.Single(registry.List()).Fences);
        Assert.Contains("fences", registry.FormatBufInfo());
        Assert.Matches(@"\s2\s+fenced", registry.FormatBufInfo());

        write.Signal();
        Assert.Equal(1, Assert.Single(registry.List()).Fences);
        read.Signal();
        Assert.Equal(0, Assert.Single(registry.List()).Fences);
    }

    [Fact]
    public void Wait_ZeroTimeout_TestsOnly()
    {
        Fence f = NewFence();
        ReservationObject resv = With(f, FenceUsage.Write);

        Assert.False(resv.Wait(FenceUsage.Write, TimeSpan.Zero, TestContext.Current.CancellationToken));
        Assert.True(resv.Wait(FenceUsage.Kernel, TimeSpan.Zero, TestContext.Current.CancellationToken));
        f.Signal();
        Assert.True(resv.Wait(FenceUsage.Write, TimeSpan.Zero, TestContext.Current.CancellationToken));
    }

    [Fact]
    public async Task Wait_AllFencesSignaledByAnotherThread_ReturnsTrue()
    {
        var timeline = new FenceTimeline("gpu");
        var resv = new ReservationObject();
        resv.Reserve(1);
        resv.AddFence(timeline.CreateFence(), FenceUsage.Write);
        Fence reader = NewFence();
        resv.Reserve(1);
        resv.AddFence(reader, FenceUsage.Read);

        Task signaler = Task.Run(() =>
        {
            timeline.SignalUpTo(1);
            reader.Signal();
        }, TestContext.Current.CancellationToken);

        Assert.True(resv.Wait(FenceUsage.Read, Timeout.InfiniteTimeSpan, TestContext.Current.CancellationToken));
        Assert.True(resv.Test(FenceUsage.Bookkeep));
        await signaler;
    }

    [Fact]
    public async Task WaitAsync_TimeoutThenSignal_FalseThenTrue()
    {
        Fence f = NewFence();
        ReservationObject resv = With(f, FenceUsage.Kernel);

        Assert.False(await resv.WaitAsync(FenceUsage.Read, TimeSpan.FromMilliseconds(10), TestContext.Current.CancellationToken));
        Task<bool> waiting = resv.WaitAsync(FenceUsage.Read, Timeout.InfiniteTimeSpan, TestContext.Current.CancellationToken);
        f.Signal();
        Assert.True(await waiting);
    }

    [Fact]
    public void Wait_HoldingTheLock_Throws()
    {
        ReservationObject resv = With(NewFence(), FenceUsage.Write);

        using (resv.Lock.Enter())
        {
            Assert.Throws<InvalidOperationException>(() => resv.Wait(FenceUsage.Write, TimeSpan.Zero, TestContext.Current.CancellationToken));
        }
    }

    [Fact]
    public async Task Wait_Blocking_DoesNotHoldTheLock()
    {
        Fence f = NewFence();
        ReservationObject resv = With(f, FenceUsage.Write);
        using var waiterStarted = new ManualResetEventSlim();
        Task<bool> waiter = Task.Run(() =>
        {
            waiterStarted.Set();
            return resv.Wait(FenceUsage.Write, Timeout.InfiniteTimeSpan, TestContext.Current.CancellationToken);
        }, TestContext.Current.CancellationToken);
        waiterStarted.Wait(TestContext.Current.CancellationToken);

        // Another thread takes the lock, adds a fence and signals the awaited one. Were the waiter holding the lock, this
        // would never get past Enter, the fence would never signal, and the test would hang at the await below.
        Task adder = Task.Run(() =>
        {
            using (resv.Lock.Enter())
            {
                resv.Reserve(1);
                resv.AddFence(NewFence(), FenceUsage.Read);
            }

            f.Signal();
        }, TestContext.Current.CancellationToken);

        await adder;
        Assert.True(await waiter);
        Assert.Equal(1, resv.Count);
    }

    [Fact]
    public async Task Wait_Canceled_ThrowsOperationCanceled()
    {
        ReservationObject resv = With(NewFence(), FenceUsage.Write);
        using var cts = new CancellationTokenSource();
        Task<bool> waiting = Task.Run(() => resv.Wait(FenceUsage.Read, Timeout.InfiniteTimeSpan, cts.Token), TestContext.Current.CancellationToken);

        await cts.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting);
    }

    [Fact]
    public async Task AddFence_ConcurrentWritersHoldingLockAcrossReserveAndAdd_NoneFails()
    {
        var resv = new ReservationObject();
        Fence[] fences = [.. Enumerable.Range(0, 64).Select(_ => NewFence())];

        await Task.WhenAll(fences.Select(f => Task.Run(() =>
        {
            using OrderedLock.Scope scope = resv.Lock.Enter();
            resv.Reserve(1);
            resv.AddFence(f, FenceUsage.Read);
        }, TestContext.Current.CancellationToken)));

        Assert.Equal(64, resv.Count);
        Assert.Equal(0, resv.ReservedSlots);
    }
}

using System.Diagnostics.Metrics;

namespace DmaBuf.Tests;

// Ports of the kernel's drivers/dma-buf/st-dma-fence.c, adapted to this API; each test names the selftest it ports.
// The systematic (Coyote) version of race_signal_callback is in FenceCoyoteTests.
public sealed class FenceTests
{
    private static readonly TimeSpan s_long = TimeSpan.FromSeconds(30);

    private static Fence NewFence(ulong seqno = 1) => new(FenceContext.Allocate("mock"), seqno);

    // st-dma-fence: test_signaling
    [Fact]
    public void Signal_NewFence_SignalsOnceThenReportsAlreadySignaled()
    {
        Fence f = NewFence();
        Assert.False(f.IsSignaled);
        Assert.Null(f.SignalTimestamp);

        Assert.True(f.Signal());

        Assert.True(f.IsSignaled);
        Assert.NotNull(f.SignalTimestamp);
        Assert.False(f.Signal());
        Assert.False(f.SignalWithError(FenceError.IO));
        Assert.Equal(1, f.Status);
    }

    // st-dma-fence: test_add_callback
    [Fact]
    public void AddCallback_BeforeSignal_RunsOnceOnSignal()
    {
        Fence f = NewFence();
        int runs = 0;
        Fence? seen = null;
        FenceCallback? registration = f.AddCallback(x =>
        {
            runs++;
            seen = x;
        });
        Assert.NotNull(registration);
        Assert.Same(f, registration.Fence);
        Assert.Equal(0, runs);

        f.Signal();
        f.Signal();

        Assert.Equal(1, runs);
        Assert.Same(f, seen);
    }

    // st-dma-fence: test_late_add_callback
    [Fact]
    public void AddCallback_AfterSignal_ReportsSignaledAndNeverRuns()
    {
        Fence f = NewFence();
        f.Signal();
        bool ran = false;

        FenceCallback? registration = f.AddCallback(_ => ran = true);
        f.Signal();

        Assert.Null(registration);
        Assert.False(ran);
    }

    // st-dma-fence: test_rm_callback
    [Fact]
    public void RemoveCallback_BeforeSignal_RemovesAndCallbackNeverRuns()
    {
        Fence f = NewFence();
        bool ran = false;
        FenceCallback registration = f.AddCallback(_ => ran = true)!;

        Assert.True(f.RemoveCallback(registration));
        Assert.False(registration.Remove());
        f.Signal();

        Assert.False(ran);
    }

    // st-dma-fence: test_late_rm_callback
    [Fact]
    public void RemoveCallback_AfterSignal_FailsBecauseCallbackRan()
    {
        Fence f = NewFence();
        bool ran = false;
        FenceCallback registration = f.AddCallback(_ => ran = true)!;
        f.Signal();
        Assert.True(ran);

        Assert.False(f.RemoveCallback(registration));
    }

    [Fact]
    public void RemoveCallback_MiddleOfSeveral_OthersRunInOrder()
    {
        Fence f = NewFence();
        var order = new List<int>();
        f.AddCallback(_ => order.Add(1));
        FenceCallback middle = f.AddCallback(_ => order.Add(2))!;
        f.AddCallback(_ => order.Add(3));
        FenceCallback last = f.AddCallback(_ => order.Add(4))!;

        Assert.True(middle.Remove());
        Assert.True(last.Remove());
        f.AddCallback(_ => order.Add(5));
        f.Signal();

        Assert.Equal([1, 3, 5], order);
    }

    [Fact]
    public void RemoveCallback_OfAnotherFence_Throws()
    {
        Fence a = NewFence();
        Fence b = NewFence();
        FenceCallback registration = a.AddCallback(_ => { })!;

        Assert.Throws<ArgumentException>(() => b.RemoveCallback(registration));
    }

    // st-dma-fence: test_status
    [Fact]
    public void Status_BeforeAndAfterSignal_ZeroThenOne()
    {
        Fence f = NewFence();
        Assert.Equal(0, f.Status);

        f.Signal();

        Assert.Equal(1, f.Status);
    }

    // st-dma-fence: test_error
    [Fact]
    public void SetError_BeforeSignal_HiddenUntilSignalThenReported()
    {
        Fence f = NewFence();
        f.SetError(FenceError.IO);
        Assert.Equal(0, f.Status);
        Assert.False(f.IsSignaled);

        f.Signal();

        Assert.Equal(FenceError.IO, f.Status);
        Assert.Equal(-5, f.Status);
    }

    [Fact]
    public void SetError_AfterSignal_ThrowsAndStatusStays()
    {
        Fence f = NewFence();
        f.Signal();

        Assert.Throws<InvalidOperationException>(() => f.SetError(FenceError.IO));
        Assert.Equal(1, f.Status);
    }

    [Fact]
    public void SignalWithError_Pending_SignalsWithThatErrorAndCallbacksSeeIt()
    {
        Fence f = NewFence();
        int statusInCallback = 0;
        f.AddCallback(x => statusInCallback = x.Status);

        Assert.True(f.SignalWithError(FenceError.FromException(new TimeoutException())));

        Assert.Equal(FenceError.TimedOut, f.Status);
        Assert.Equal(FenceError.TimedOut, statusInCallback);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(-4096)]
    [InlineData(int.MinValue)]
    public void SignalWithError_NotANegativeErrno_ThrowsAndStaysPending(int error)
    {
        Fence f = NewFence();

        Assert.Throws<ArgumentOutOfRangeException>(() => f.SignalWithError(error));
        Assert.Throws<ArgumentOutOfRangeException>(() => f.SetError(error));
        Assert.False(f.IsSignaled);
    }

    [Fact]
    public void FromException_MapsCancellationTimeoutAndOthers()
    {
        Assert.Equal(FenceError.Canceled, FenceError.FromException(new OperationCanceledException()));
        Assert.Equal(FenceError.TimedOut, FenceError.FromException(new TimeoutException()));
        Assert.Equal(FenceError.IO, FenceError.FromException(new InvalidDataException()));
    }

    // st-dma-fence: test_wait
    [Fact]
    public void Wait_ZeroTimeout_OnlyTests()
    {
        Fence f = NewFence();
        Assert.False(f.Wait(TimeSpan.Zero, TestContext.Current.CancellationToken));

        f.Signal();

        Assert.True(f.Wait(TimeSpan.Zero, TestContext.Current.CancellationToken));
    }

    // st-dma-fence: test_wait_timeout
    [Fact]
    public async Task Wait_Timeout_ExpiresUnsignaledThenReturnsWhenAnotherThreadSignals()
    {
        Fence f = NewFence();
        Assert.False(f.Wait(TimeSpan.FromMilliseconds(20), TestContext.Current.CancellationToken));

        Task signaler = Task.Run(async () =>
        {
            await Task.Delay(20);
            f.Signal();
        }, TestContext.Current.CancellationToken);

        Assert.True(f.Wait(s_long, TestContext.Current.CancellationToken));
        await signaler;
    }

    [Fact]
    public async Task Wait_AfterTimeout_LeavesNoCallbackBehind()
    {
        Fence f = NewFence();
        Assert.False(f.Wait(TimeSpan.FromMilliseconds(1), TestContext.Current.CancellationToken));
        Assert.False(await f.WaitAsync(TimeSpan.FromMilliseconds(1), TestContext.Current.CancellationToken));

        // Waits that gave up removed their callbacks: a long-lived fence polled with timeouts does not grow.
        Assert.Equal(0, f.CallbackCount);
        f.AddCallback(_ => { });
        Assert.Equal(1, f.CallbackCount);
    }

    [Fact]
    public async Task Wait_Canceled_ThrowsOperationCanceled()
    {
        Fence f = NewFence();
        using var cts = new CancellationTokenSource();
        Task<bool> waiting = Task.Run(() => f.Wait(Timeout.InfiniteTimeSpan, cts.Token), TestContext.Current.CancellationToken);

        await cts.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting);
        Assert.False(f.IsSignaled);
    }

    [Fact]
    public void Wait_NegativeTimeout_Throws()
    {
        Fence f = NewFence();
        Assert.Throws<ArgumentOutOfRangeException>(() => f.Wait(TimeSpan.FromMilliseconds(-2), TestContext.Current.CancellationToken));
    }

    [Fact]
    public async Task WaitAsync_SignaledLater_CompletesTrue()
    {
        Fence f = NewFence();
        Task<bool> waiting = f.WaitAsync(Timeout.InfiniteTimeSpan, TestContext.Current.CancellationToken);
        Assert.False(waiting.IsCompleted);

        f.Signal();

        Assert.True(await waiting);
    }

    [Fact]
    public async Task WaitAsync_TimeoutPasses_CompletesFalse()
    {
        Fence f = NewFence();

        Assert.False(await f.WaitAsync(TimeSpan.FromMilliseconds(10), TestContext.Current.CancellationToken));
        Assert.False(await f.WaitAsync(TimeSpan.Zero, TestContext.Current.CancellationToken));
    }

    [Fact]
    public async Task WaitAsync_Canceled_ThrowsOperationCanceled()
    {
        Fence f = NewFence();
        using var cts = new CancellationTokenSource();
        Task<bool> waiting = f.WaitAsync(Timeout.InfiniteTimeSpan, cts.Token);

        await cts.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting);
    }

    // st-dma-fence: test_stub
    [Fact]
    public void Signaled_Stub_IsAlwaysSignaled()
    {
        for (int i = 0; i < 64; i++)
        {
            Fence stub = Fence.Signaled;
            Assert.True(stub.IsSignaled);
            Assert.Equal(1, stub.Status);
            Assert.Null(stub.AddCallback(_ => { }));
            Assert.False(stub.Signal());
        }
    }

    [Fact]
    public void IsLater_SameContext_ComparesSequenceNumbers()
    {
        var context = FenceContext.Allocate("ring");
        var early = new Fence(context, 1);
        var late = new Fence(context, 2);

        Assert.True(Fence.IsLater(late, early));
        Assert.False(Fence.IsLater(early, late));
        Assert.False(Fence.IsLater(late, late));
        Assert.True(Fence.IsLaterOrSame(late, late));
    }

    [Fact]
    public void IsLater_DifferentContexts_Throws()
    {
        Assert.Throws<ArgumentException>(() => Fence.IsLater(NewFence(2), NewFence(1)));
    }

    [Fact]
    public void Allocate_ManyContexts_IdsAreUnique()
    {
        var ids = new HashSet<long>();
        Parallel.For(0, 1000, _ =>
        {
            long id = FenceContext.Allocate("c").Id;
            lock (ids)
            {
                Assert.True(ids.Add(id));
            }
        });
        Assert.Equal(1000, ids.Count);
    }

    [Fact]
    public void Signal_CallbackThrows_OtherCallbacksStillRunAndErrorIsReported()
    {
        Fence f = NewFence();
        int runs = 0;
        f.AddCallback(_ => runs++);
        f.AddCallback(_ => throw new InvalidOperationException("boom"));
        f.AddCallback(_ => runs++);

        AggregateException e = Assert.Throws<AggregateException>(() => f.Signal());

        Assert.Equal(2, runs);
        Assert.IsType<InvalidOperationException>(Assert.Single(e.InnerExceptions));
        Assert.True(f.IsSignaled);
    }

    // Rule 5: a fence callback runs with no framework lock held, so it may take the buffer lock, and another thread can
    // take the buffer lock while the callback runs.
    [Fact]
    public void Callback_RunsWithNoFrameworkLockHeld_AndAnotherThreadCanTakeTheBufferLock()
    {
        using DmaBufHandle handle = Make.Buffer(new TestExporter());
        DmaBuffer buffer = handle.Buffer;
        Fence f = NewFence();
        buffer.Resv.Reserve(1);
        buffer.Resv.AddFence(f, FenceUsage.Write);
        int heldInCallback = -1;
        bool bufferLockHeldInCallback = true;
        bool otherThreadTookLock = false;
        int otherThreadFences = -1;
        int callbackThread = 0;
        f.AddCallback(_ =>
        {
            callbackThread = Environment.CurrentManagedThreadId;
            heldInCallback = OrderedLock.HeldByCurrentThread;
            bufferLockHeldInCallback = buffer.Lock.IsHeldByCurrentThread;
            var other = new Thread(() =>
            {
                using OrderedLock.Scope scope = buffer.Lock.Enter();
                otherThreadFences = buffer.Resv.Count;
                otherThreadTookLock = true;
            });
            other.Start();
            other.Join();
            using OrderedLock.Scope mine = buffer.Lock.Enter();
        });

        f.Signal();

        Assert.Equal(Environment.CurrentManagedThreadId, callbackThread);
        Assert.Equal(0, heldInCallback);
        Assert.False(bufferLockHeldInCallback);
        Assert.True(otherThreadTookLock);
        Assert.Equal(0, otherThreadFences);
    }

    [Fact]
    public void Signal_UnderBufferLockWithCallbacks_ThrowsLockOrderAndLeavesFencePending()
    {
        using DmaBufHandle handle = Make.Buffer(new TestExporter());
        Fence f = NewFence();
        bool ran = false;
        f.AddCallback(_ => ran = true);

        using (handle.Buffer.Lock.Enter())
        {
            Assert.Throws<LockOrderException>(() => f.Signal());
        }

        Assert.False(f.IsSignaled);
        Assert.False(ran);
        f.Signal();
        Assert.True(ran);
    }

    // st-dma-fence: test_race_signal_callback, run on real threads. Two threads each publish a fence, pick up the
    // other's, add a callback to it and signal their own, before or after the add. A callback that was added must run
    // exactly once; one that could not be added (fence already signaled) must never run.
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void RaceSignalCallback_TwoThreads_NoCallbackLostOrRunTwice(bool signalBeforeAdd)
    {
        const int Passes = 2000;
        var result = FenceRace.RunOnThreads(Passes, signalBeforeAdd);

        Assert.Equal(0, result.Lost);
        Assert.Equal(0, result.Duplicated);
        Assert.Equal(0, result.RanAfterRefusal);
        Assert.Equal(2 * Passes, result.Passes);
    }

    [Fact]
    public void Meter_CountsEachSignalOnce()
    {
        long signaled = 0;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == DmaBufMetrics.MeterName && instrument.Name == "dmabuf.fences.signaled")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, _, _) => Interlocked.Add(ref signaled, value));
        listener.Start();

        Fence a = NewFence(), b = NewFence();
        a.Signal();
        a.Signal();
        b.SignalWithError(FenceError.Canceled);

        // Other tests signal fences in parallel, so this is a lower bound.
        Assert.True(Interlocked.Read(ref signaled) >= 2);
    }

    [Fact]
    public void Signal_ManyThreadsRacing_ExactlyOneWinsAndEachCallbackRunsOnce()
    {
        for (int round = 0; round < 200; round++)
        {
            Fence f = NewFence();
            int runs = 0;
            int added = 0;
            int winners = 0;
            Parallel.For(0, 8, i =>
            {
                if (i % 2 == 0)
                {
                    if (f.AddCallback(_ => Interlocked.Increment(ref runs)) is not null)
                    {
                        Interlocked.Increment(ref added);
                    }
                }
                else if (f.Signal())
                {
                    Interlocked.Increment(ref winners);
                }
            });

            Assert.Equal(1, winners);
            Assert.Equal(added, runs);
        }
    }
}

namespace DmaBuf.Tests;

public sealed class FenceTimelineTests
{
    [Fact]
    public void CreateFence_Repeatedly_IncreasingSequenceNumbersOnOneContext()
    {
        var timeline = new FenceTimeline("ring");

        Fence a = timeline.CreateFence();
        Fence b = timeline.CreateFence();
        Fence c = timeline.CreateFence();

        Assert.Equal([1UL, 2UL, 3UL], [a.SequenceNumber, b.SequenceNumber, c.SequenceNumber]);
        Assert.All([a, b, c], f => Assert.Same(timeline.Context, f.Context));
        Assert.True(Fence.IsLater(c, a));
        Assert.Equal(3UL, timeline.LastSequenceNumber);
        Assert.Equal(3, timeline.PendingCount);
    }

    [Fact]
    public void SignalUpTo_SignalsPendingFencesInOrderAndNoFurther()
    {
        var timeline = new FenceTimeline("ring");
        Fence[] fences = [.. Enumerable.Range(0, 5).Select(_ => timeline.CreateFence())];
        var order = new List<ulong>();
        foreach (Fence f in fences.Reverse())
        {
            f.AddCallback(x => order.Add(x.SequenceNumber));
        }

        int signaled = timeline.SignalUpTo(3);

        Assert.Equal(3, signaled);
        Assert.Equal([1UL, 2UL, 3UL], order);
        Assert.False(fences[3].IsSignaled);
        Assert.False(fences[4].IsSignaled);
        Assert.Equal(3UL, timeline.SignaledSequenceNumber);
        Assert.Equal(2, timeline.PendingCount);
    }

    [Fact]
    public void SignalUpTo_Backwards_DoesNothing()
    {
        var timeline = new FenceTimeline("ring");
        timeline.CreateFence();
        timeline.CreateFence();
        timeline.SignalUpTo(2);

        Assert.Equal(0, timeline.SignalUpTo(1));
        Assert.Equal(0, timeline.SignalUpTo(2));
        Assert.Equal(2UL, timeline.SignaledSequenceNumber);
    }

    [Fact]
    public void SignalUpTo_FenceAlreadySignaledDirectly_IsNotCountedAgain()
    {
        var timeline = new FenceTimeline("ring");
        Fence first = timeline.CreateFence();
        timeline.CreateFence();
        first.SignalWithError(FenceError.IO);

        Assert.Equal(1, timeline.SignalUpTo(2));
        Assert.Equal(FenceError.IO, first.Status);
    }

    [Fact]
    public void CreateFence_AfterSignalingAhead_StaysLaterThanTheSignalPoint()
    {
        var timeline = new FenceTimeline("ring");
        timeline.CreateFence();

        timeline.SignalUpTo(10);
        Fence next = timeline.CreateFence();

        Assert.Equal(11UL, next.SequenceNumber);
        Assert.False(next.IsSignaled);
    }

    [Fact]
    public void Find_PendingThenSignaled_ReturnsFenceThenNull()
    {
        var timeline = new FenceTimeline("ring");
        Fence one = timeline.CreateFence();
        Fence two = timeline.CreateFence();

        Assert.Same(one, timeline.Find(1));
        Assert.Same(two, timeline.Find(2));
        Assert.Null(timeline.Find(3));

        timeline.SignalUpTo(1);

        Assert.Null(timeline.Find(1));
        Assert.Same(two, timeline.Find(2));
    }

    [Fact]
    public void SignalUpTo_CallbackThrows_StillSignalsEveryFenceAndReports()
    {
        var timeline = new FenceTimeline("ring");
        Fence a = timeline.CreateFence();
        Fence b = timeline.CreateFence();
        a.AddCallback(_ => throw new InvalidOperationException("boom"));

        AggregateException e = Assert.Throws<AggregateException>(() => timeline.SignalUpTo(2));

        Assert.IsType<InvalidOperationException>(Assert.Single(e.InnerExceptions));
        Assert.True(a.IsSignaled);
        Assert.True(b.IsSignaled);
    }

    [Fact]
    public void SignalUpTo_ConcurrentCalls_EachFenceSignaledExactlyOnce()
    {
        var timeline = new FenceTimeline("ring");
        Fence[] fences = [.. Enumerable.Range(0, 1000).Select(_ => timeline.CreateFence())];
        int[] runs = new int[fences.Length];
        for (int i = 0; i < fences.Length; i++)
        {
            int index = i;
            fences[i].AddCallback(_ => Interlocked.Increment(ref runs[index]));
        }

        int total = 0;
        Parallel.For(1, 1001, n => Interlocked.Add(ref total, timeline.SignalUpTo((ulong)n)));

        Assert.Equal(1000, total);
        Assert.All(runs, r => Assert.Equal(1, r));
    }
}

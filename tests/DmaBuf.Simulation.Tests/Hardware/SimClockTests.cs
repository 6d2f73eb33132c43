namespace DmaBuf.Simulation.Tests;

public sealed class SimClockTests
{
    [Fact]
    public void Advance_NegativeNs_Throws()
    {
        var clock = new SimClock();
        Assert.Throws<ArgumentOutOfRangeException>(() => clock.Advance(-1));
    }

    [Fact]
    public void Advance_NoTimers_MovesTimeForward()
    {
        var clock = new SimClock();
        clock.Advance(5);
        clock.Advance(7);
        Assert.Equal(12, clock.NowNs);
    }

    [Fact]
    public void Advance_DueTimers_RunByDueTimeThenRegistrationAtTheirDueTime()
    {
        var clock = new SimClock();
        var runs = new List<(string Name, long At)>();
        clock.Schedule(30, () => runs.Add(("c", clock.NowNs)));
        clock.Schedule(10, () => runs.Add(("a", clock.NowNs)));
        clock.Schedule(10, () => runs.Add(("b", clock.NowNs)));

        clock.Advance(50);

        Assert.Equal([("a", 10L), ("b", 10L), ("c", 30L)], runs);
        Assert.Equal(50, clock.NowNs);
    }

    [Fact]
    public void Advance_TimerNotYetDue_DoesNotRun()
    {
        var clock = new SimClock();
        bool ran = false;
        SimTimer timer = clock.Schedule(100, () => ran = true);

        clock.Advance(99);

        Assert.False(ran);
        Assert.True(timer.IsPending);
        clock.Advance(1);
        Assert.True(ran);
        Assert.False(timer.IsPending);
    }

    [Fact]
    public void Cancel_PendingTimer_NeverRuns()
    {
        var clock = new SimClock();
        bool ran = false;
        SimTimer timer = clock.Schedule(10, () => ran = true);

        Assert.True(timer.Cancel());
        clock.Advance(100);

        Assert.False(ran);
        Assert.False(timer.IsPending);
        Assert.False(timer.Cancel());
        Assert.Equal(0, clock.PendingTimers);
    }

    [Fact]
    public void AdvanceTo_PastTime_LeavesTimeUnchanged()
    {
        var clock = new SimClock();
        clock.AdvanceTo(100);
        clock.AdvanceTo(40);
        Assert.Equal(100, clock.NowNs);
    }

    [Fact]
    public void Schedule_FromCallbackDueWithinAdvance_RunsInSameAdvance()
    {
        var clock = new SimClock();
        long innerAt = -1;
        clock.Schedule(10, () => clock.Schedule(clock.NowNs + 5, () => innerAt = clock.NowNs));

        clock.Advance(20);

        Assert.Equal(15, innerAt);
    }

    [Fact]
    public void Advance_FromCallback_RunsLaterTimersInsideAndNeverGoesBack()
    {
        var clock = new SimClock();
        long secondAt = -1;
        clock.Schedule(10, () => clock.Advance(100)); // a callback that charges time, as a lazy flush does
        clock.Schedule(20, () => secondAt = clock.NowNs);

        clock.Advance(30);

        Assert.Equal(20, secondAt); // ran at its due time, inside the nested advance
        Assert.Equal(110, clock.NowNs); // the outer advance to 30 does not pull time back
    }

    [Fact]
    public void RunUntilIdle_PendingTimers_RunsAllAndMovesToLastDueTime()
    {
        var clock = new SimClock();
        int count = 0;
        clock.Schedule(1_000, () => count++);
        clock.Schedule(5_000, () => count++);
        clock.Schedule(3_000, () => count++).Cancel();

        int ran = clock.RunUntilIdle();

        Assert.Equal(2, ran);
        Assert.Equal(2, count);
        Assert.Equal(5_000, clock.NowNs);
    }

    [Fact]
    public void Charge_PastADueTimer_MovesTimeButRunsTheTimerOnlyAtTheNextAdvance()
    {
        var clock = new SimClock();
        long ranAt = -1;
        clock.Schedule(10, () => ranAt = clock.NowNs);

        clock.Charge(25);

        Assert.Equal(25, clock.NowNs);
        Assert.Equal(-1, ranAt);
        Assert.True(clock.HasDueTimers);

        clock.Advance(0);

        Assert.Equal(25, ranAt); // late by the charge, never back in time
        Assert.False(clock.HasDueTimers);
    }
}

namespace DmaBuf.Simulation;

/// <summary>
/// Deterministic simulated time in nanoseconds, with timers. Nothing here reads the wall clock: the same sequence of
/// calls gives the same times and the same timer order on every run.
/// </summary>
/// <remarks>
/// <para>
/// Timers run inside <see cref="Advance"/> and <see cref="AdvanceTo"/>, ordered by due time and then by the order in
/// which they were scheduled. While a timer runs, <see cref="NowNs"/> is its due time, or later if time had already
/// passed it: time never goes backwards. Callbacks may schedule, cancel and advance; an advance from inside a callback
/// runs the timers due by then, so the order is preserved.
/// </para>
/// <para>
/// <see cref="Charge"/> is how the hardware bills work it does for a caller (a map, an unmap): time passes, but no
/// timer runs, because the caller may hold locks (an exporter maps with the buffer lock held) and timer callbacks run
/// outside every lock (design rule 5). Timers that fell due during a charge run at the next
/// <see cref="Advance"/>/<see cref="AdvanceTo"/> (an <c>Advance(0)</c> is enough), as late as the charge made them.
/// The clock is not thread-safe: the simulation is single-threaded.
/// </para>
/// </remarks>
public sealed class SimClock
{
    private readonly PriorityQueue<SimTimer, TimerKey> _timers = new();
    private long _nextSequence;

    /// <summary>The current simulated time in nanoseconds since the start of the simulation.</summary>
    public long NowNs { get; private set; }

    /// <summary>Number of timers scheduled and neither run nor cancelled.</summary>
    public int PendingTimers { get; private set; }

    /// <summary>Moves time forward by <paramref name="ns"/>, running every timer that falls due on the way.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="ns"/> is negative.</exception>
    public void Advance(long ns)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(ns);
        AdvanceTo(Later(NowNs, ns));
    }

    /// <summary>
    /// Moves time forward by <paramref name="ns"/> of work done by the caller, without running timers; see the remarks.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="ns"/> is negative.</exception>
    public void Charge(long ns)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(ns);
        NowNs = Later(NowNs, ns);
    }

    /// <summary><paramref name="timeNs"/> + <paramref name="ns"/>, or an error when simulated time would pass 2^63 ns.</summary>
    /// <exception cref="OverflowException">The sum does not fit: the run's costs add up to more than about 292 years.</exception>
    internal static long Later(long timeNs, long ns) =>
        timeNs > long.MaxValue - ns
            ? throw new OverflowException(
                "Simulated time passed 2^63 ns (about 292 years): the cost profile's times or the number of frames are too large for one run.")
            : timeNs + ns;

    /// <summary>Whether a timer is due now and waits for the next <see cref="Advance"/>.</summary>
    public bool HasDueTimers
    {
        get
        {
            while (_timers.TryPeek(out SimTimer? timer, out TimerKey key) && !timer.IsPending)
            {
                _timers.Dequeue();
            }

            return _timers.TryPeek(out _, out TimerKey head) && head.DueNs <= NowNs;
        }
    }

    /// <summary>Moves time forward to <paramref name="timeNs"/>, running due timers; a time in the past only runs timers already due.</summary>
    public void AdvanceTo(long timeNs)
    {
        // Fast path: nothing due, which is the common case on every mapping operation.
        if (PendingTimers == 0 || !_timers.TryPeek(out _, out TimerKey head) || head.DueNs > timeNs)
        {
            if (PendingTimers == 0 && _timers.Count != 0)
            {
                _timers.Clear(); // only cancelled timers are left
            }

            if (timeNs > NowNs)
            {
                NowNs = timeNs;
            }

            return;
        }

        while (_timers.TryPeek(out SimTimer? timer, out TimerKey key) && key.DueNs <= timeNs)
        {
            _timers.Dequeue();
            if (!timer.IsPending)
            {
                continue; // cancelled: already taken off PendingTimers
            }

            PendingTimers--;
            timer.MarkFired();
            if (key.DueNs > NowNs)
            {
                NowNs = key.DueNs;
            }

            timer.Callback();
        }

        if (timeNs > NowNs)
        {
            NowNs = timeNs;
        }
    }

    /// <summary>
    /// Schedules <paramref name="callback"/> to run when time reaches <paramref name="dueNs"/>. A due time at or before
    /// <see cref="NowNs"/> runs at the next <see cref="Advance"/> (an <c>Advance(0)</c> is enough).
    /// </summary>
    /// <returns>A handle that can cancel the timer.</returns>
    public SimTimer Schedule(long dueNs, Action callback)
    {
        ArgumentNullException.ThrowIfNull(callback);
        var timer = new SimTimer(this, dueNs, callback);
        _timers.Enqueue(timer, new TimerKey(dueNs, _nextSequence++));
        PendingTimers++;
        return timer;
    }

    /// <summary>Schedules <paramref name="callback"/> to run <paramref name="delayNs"/> after now.</summary>
    public SimTimer ScheduleAfter(long delayNs, Action callback)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(delayNs);
        return Schedule(Later(NowNs, delayNs), callback);
    }

    /// <summary>Runs timers one after another, moving time to each, until none is left; returns how many ran.</summary>
    /// <remarks>Timers that keep rescheduling themselves never let this return; use <see cref="AdvanceTo"/> for those.</remarks>
    public int RunUntilIdle()
    {
        int ran = 0;
        while (_timers.TryPeek(out SimTimer? timer, out TimerKey key))
        {
            if (!timer.IsPending)
            {
                _timers.Dequeue();
                continue;
            }

            AdvanceTo(Math.Max(key.DueNs, NowNs));
            ran++;
        }

        return ran;
    }

    internal void OnCancelled() => PendingTimers--;

    private readonly record struct TimerKey(long DueNs, long Sequence) : IComparable<TimerKey>
    {
        public int CompareTo(TimerKey other)
        {
            int c = DueNs.CompareTo(other.DueNs);
            return c != 0 ? c : Sequence.CompareTo(other.Sequence);
        }
    }
}

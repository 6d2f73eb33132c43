namespace DmaBuf.Simulation;

/// <summary>A timer scheduled on a <see cref="SimClock"/>.</summary>
public sealed class SimTimer
{
    private readonly SimClock _clock;

    internal SimTimer(SimClock clock, long dueNs, Action callback)
    {
        _clock = clock;
        DueNs = dueNs;
        Callback = callback;
        IsPending = true;
    }

    /// <summary>The simulated time at which the timer runs.</summary>
    public long DueNs { get; }

    /// <summary>Whether the timer has neither run nor been cancelled.</summary>
    public bool IsPending { get; private set; }

    internal Action Callback { get; }

    /// <summary>Stops the timer from running; does nothing if it already ran or was cancelled.</summary>
    /// <returns>Whether the timer was pending.</returns>
    public bool Cancel()
    {
        if (!IsPending)
        {
            return false;
        }

        IsPending = false;
        _clock.OnCancelled();
        return true;
    }

    internal void MarkFired() => IsPending = false;
}

namespace DmaBuf;

/// <summary>
/// A software timeline (in the manner of <c>sw_sync</c>): one <see cref="FenceContext"/> whose fences get increasing
/// sequence numbers and are signaled in that order by <see cref="SignalUpTo"/>, as a device ring signals the fences of
/// the jobs it completes.
/// </summary>
/// <remarks>
/// <para><b>Order.</b> One <see cref="SignalUpTo"/> call signals its fences in ascending sequence order, each exactly
/// once. Like a ring's completion path, a timeline has one signaler: concurrent <see cref="SignalUpTo"/> calls still
/// signal every fence exactly once, but fences from two racing calls may interleave.</para>
/// <para><b>Locking.</b> The timeline's lock guards its list of pending fences only; fences are signaled, and their
/// callbacks run, after it is released (rule 5).</para>
/// </remarks>
public sealed class FenceTimeline
{
    private readonly object _lock = new(); // a Monitor, so Coyote can schedule inside it
    private readonly List<Fence> _pending = []; // ascending sequence numbers
    private ulong _last;
    private ulong _signaledUpTo;

    /// <summary>Creates a timeline on a newly allocated context named <paramref name="name"/>.</summary>
    /// <exception cref="ArgumentException"><paramref name="name"/> is null or empty.</exception>
    public FenceTimeline(string name) => Context = FenceContext.Allocate(name);

    /// <summary>The timeline's context; every fence it creates belongs to it.</summary>
    public FenceContext Context { get; }

    /// <summary>The timeline's name.</summary>
    public string Name => Context.Name;

    /// <summary>Sequence number of the last fence created, or of the signal point if that is higher; 0 at first.</summary>
    public ulong LastSequenceNumber
    {
        get
        {
            lock (_lock)
            {
                return _last;
            }
        }
    }

    /// <summary>The highest point passed to <see cref="SignalUpTo"/> (the timeline's value in <c>sw_sync</c> terms).</summary>
    public ulong SignaledSequenceNumber
    {
        get
        {
            lock (_lock)
            {
                return _signaledUpTo;
            }
        }
    }

    /// <summary>Number of fences created here and not yet signaled.</summary>
    public int PendingCount
    {
        get
        {
            lock (_lock)
            {
                Prune();
                return _pending.Count;
            }
        }
    }

    /// <summary>Creates the next fence: its sequence number is one above every number handed out or signaled so far.</summary>
    public Fence CreateFence()
    {
        lock (_lock)
        {
            var fence = new Fence(Context, ++_last);
            _pending.Add(fence);
            return fence;
        }
    }

    /// <summary>The fence with <paramref name="sequenceNumber"/> if it was created here and has not signaled yet; otherwise null.</summary>
    public Fence? Find(ulong sequenceNumber)
    {
        lock (_lock)
        {
            int lo = 0, hi = _pending.Count - 1;
            while (lo <= hi)
            {
                int mid = lo + ((hi - lo) / 2);
                ulong seq = _pending[mid].SequenceNumber;
                if (seq == sequenceNumber)
                {
                    Fence found = _pending[mid];
                    return found.IsSignaled ? null : found;
                }

                if (seq < sequenceNumber)
                {
                    lo = mid + 1;
                }
                else
                {
                    hi = mid - 1;
                }
            }

            return null;
        }
    }

    /// <summary>
    /// Advances the timeline to <paramref name="sequenceNumber"/>: signals every pending fence up to it, in ascending
    /// order, on this thread. Moving backwards does nothing. Call with no framework lock held: callbacks run here.
    /// </summary>
    /// <returns>Number of fences this call signaled.</returns>
    /// <exception cref="AggregateException">Callbacks threw; every fence up to the point is still signaled.</exception>
    public int SignalUpTo(ulong sequenceNumber)
    {
        Fence[] batch;
        lock (_lock)
        {
            if (sequenceNumber <= _signaledUpTo)
            {
                return 0;
            }

            _signaledUpTo = sequenceNumber;
            _last = Math.Max(_last, sequenceNumber);
            int count = 0;
            while (count < _pending.Count && _pending[count].SequenceNumber <= sequenceNumber)
            {
                count++;
            }

            batch = [.. _pending.GetRange(0, count)];
            _pending.RemoveRange(0, count);
        }

        int signaled = 0;
        List<Exception>? errors = null;
        foreach (Fence fence in batch)
        {
            try
            {
                if (fence.Signal())
                {
                    signaled++;
                }
            }
            catch (AggregateException e)
            {
                signaled++;
                (errors ??= []).AddRange(e.InnerExceptions);
            }
        }

        if (errors is not null)
        {
            throw new AggregateException($"Callbacks threw while {Name} signaled up to {sequenceNumber}.", errors);
        }

        return signaled;
    }

    /// <inheritdoc/>
    public override string ToString() => $"timeline {Context} at {SignaledSequenceNumber}";

    private void Prune()
    {
        _pending.RemoveAll(static f => f.IsSignaled);
    }
}

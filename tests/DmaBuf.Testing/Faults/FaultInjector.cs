namespace DmaBuf.Testing;

/// <summary>
/// Decides which calls of which operations fail, for fault-injection tests: every call of an operation is counted, and
/// the calls chosen with <see cref="FailOnCall"/> or <see cref="FailFromCall"/> are told to fail. Thread-safe.
/// </summary>
/// <typeparam name="TPoint">What names an operation: an <see cref="ExporterOperation"/>, a simulated hardware site, …</typeparam>
public sealed class FaultInjector<TPoint>
    where TPoint : notnull
{
    private readonly Lock _lock = new();
    private readonly Dictionary<TPoint, int> _calls = [];
    private readonly Dictionary<TPoint, int> _failures = [];
    private readonly Dictionary<TPoint, (int From, bool Once)> _plan = [];

    /// <summary>Makes the <paramref name="nth"/> call of <paramref name="point"/> (1-based, counted from the first call ever) fail, once.</summary>
    public FaultInjector<TPoint> FailOnCall(TPoint point, int nth) => Plan(point, nth, once: true);

    /// <summary>Makes every call of <paramref name="point"/> from the <paramref name="nth"/> on fail, until <see cref="Heal"/>.</summary>
    public FaultInjector<TPoint> FailFromCall(TPoint point, int nth) => Plan(point, nth, once: false);

    /// <summary>Makes the next call of <paramref name="point"/> fail, once.</summary>
    public FaultInjector<TPoint> FailNextCall(TPoint point)
    {
        lock (_lock)
        {
            return Plan(point, _calls.GetValueOrDefault(point) + 1, once: true);
        }
    }

    /// <summary>Stops injecting failures at <paramref name="point"/> (or everywhere, when null); counts are kept.</summary>
    public void Heal(TPoint? point = default)
    {
        lock (_lock)
        {
            if (point is null)
            {
                _plan.Clear();
            }
            else
            {
                _plan.Remove(point);
            }
        }
    }

    /// <summary>Counts one call of <paramref name="point"/> and says whether it is to fail.</summary>
    public bool ShouldFail(TPoint point)
    {
        lock (_lock)
        {
            int call = _calls.GetValueOrDefault(point) + 1;
            _calls[point] = call;
            if (!_plan.TryGetValue(point, out (int From, bool Once) p) || call < p.From || (p.Once && call != p.From))
            {
                return false;
            }

            _failures[point] = _failures.GetValueOrDefault(point) + 1;
            return true;
        }
    }

    /// <summary>Calls of <paramref name="point"/> so far, failed ones included.</summary>
    public int Calls(TPoint point)
    {
        lock (_lock)
        {
            return _calls.GetValueOrDefault(point);
        }
    }

    /// <summary>Calls of <paramref name="point"/> told to fail so far.</summary>
    public int Failures(TPoint point)
    {
        lock (_lock)
        {
            return _failures.GetValueOrDefault(point);
        }
    }

    /// <summary>Calls told to fail so far, at every point.</summary>
    public int TotalFailures
    {
        get
        {
            lock (_lock)
            {
                return _failures.Values.Sum();
            }
        }
    }

    private FaultInjector<TPoint> Plan(TPoint point, int nth, bool once)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(nth);
        lock (_lock)
        {
            _plan[point] = (nth, once);
        }

        return this;
    }
}

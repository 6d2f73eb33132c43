using System.Diagnostics;

namespace DmaBuf.Stress;

/// <summary>What <see cref="RaceRunner.RunOnThreads"/> saw.</summary>
/// <param name="Iterations">Iterations run.</param>
/// <param name="Failures">Iterations that broke a rule.</param>
/// <param name="Messages">The distinct failure messages, at most ten.</param>
public sealed record RaceRunResult(int Iterations, int Failures, IReadOnlyList<string> Messages)
{
    /// <summary>Whether every iteration held.</summary>
    public bool Passed => Failures == 0;
}

/// <summary>Runs a race scenario on real threads, many times.</summary>
public static partial class RaceRunner
{
    /// <summary>
    /// Runs <paramref name="scenario"/> up to <paramref name="iterations"/> times on the thread pool, its sides spinning
    /// until all have started so that they overlap, and counts the iterations that failed.
    /// </summary>
    /// <param name="scenario">One of <see cref="RaceScenarios"/>.</param>
    /// <param name="iterations">Most iterations.</param>
    /// <param name="timeBudget">Stop early when this much wall time has passed; null for no limit.</param>
    public static RaceRunResult RunOnThreads(Func<Task> scenario, int iterations, TimeSpan? timeBudget = null)
    {
        ArgumentNullException.ThrowIfNull(scenario);
        ArgumentOutOfRangeException.ThrowIfNegative(iterations);
        var messages = new List<string>();
        int failures = 0, run = 0;
        var clock = Stopwatch.StartNew();
        bool spin = RaceWorld.SpinToStart;
        RaceWorld.SpinToStart = Environment.ProcessorCount > 1;
        try
        {
            for (; run < iterations && (timeBudget is not { } budget || clock.Elapsed < budget); run++)
            {
                try
                {
                    scenario().GetAwaiter().GetResult();
                }
                catch (Exception e)
                {
                    failures++;
                    // One defect, one line: buffer ids and counts differ from iteration to iteration.
                    string message = Digits().Replace($"{e.GetType().Name}: {e.Message}", "#");
                    if (messages.Count < 10 && !messages.Contains(message))
                    {
                        messages.Add(message);
                    }
                }
            }
        }
        finally
        {
            RaceWorld.SpinToStart = spin;
        }

        return new RaceRunResult(run, failures, messages);
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"\d+")]
    private static partial System.Text.RegularExpressions.Regex Digits();
}

namespace DmaBuf.Simulation;

/// <summary>The scenarios the simulator runs.</summary>
public static class Scenarios
{
    /// <summary>The thread's video playback case: a decoder writes, the display and the GPU read.</summary>
    public const string Playback = "playback";

    /// <summary>The chain case: a camera ISP writes, two codec engines with one descriptor-chain format read.</summary>
    public const string Camera = "camera";

    /// <summary>Playback with resolution changes that free and reallocate the pool mid-run.</summary>
    public const string Churn = "churn";

    /// <summary>Scenario names.</summary>
    public static IReadOnlyList<string> Names { get; } = [Playback, Camera, Churn];

    /// <summary>Runs the built-in scenario <paramref name="scenario"/> under <paramref name="strategy"/>.</summary>
    /// <param name="scenario">Scenario name.</param>
    /// <param name="strategy">Strategy name.</param>
    /// <param name="options">Settings.</param>
    /// <param name="progress">Receives the number of frames done.</param>
    /// <exception cref="ArgumentException">Unknown scenario or strategy, or a setting out of range.</exception>
    public static StrategyResult Run(string scenario, string strategy, ScenarioOptions options, IProgress<int>? progress = null)
    {
        if (!Names.Contains(scenario))
        {
            throw new ArgumentException($"Unknown scenario '{scenario}'. Valid: {string.Join(", ", Names)}.", nameof(scenario));
        }

        return Scenario.BuiltIn(scenario).Run(strategy, options, progress);
    }
}

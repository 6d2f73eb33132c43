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

    /// <summary>Runs <paramref name="scenario"/> under <paramref name="strategy"/>.</summary>
    /// <param name="scenario">Scenario name.</param>
    /// <param name="strategy">Strategy name.</param>
    /// <param name="options">Settings.</param>
    /// <param name="progress">Receives the number of frames done.</param>
    /// <exception cref="ArgumentException">Unknown scenario or strategy, or a setting out of range.</exception>
    public static StrategyResult Run(string scenario, string strategy, ScenarioOptions options, IProgress<int>? progress = null)
    {
        FrameScenario spec = scenario switch
        {
            Playback => new FrameScenario(Playback, soc => soc.Vpu, soc => [soc.Display, soc.Gpu], UseChains: false, Churn: false),
            Camera => new FrameScenario(Camera, soc => soc.Isp, soc => [soc.Encoder, soc.Jpeg], UseChains: true, Churn: false),
            Churn => new FrameScenario(Churn, soc => soc.Vpu, soc => [soc.Display, soc.Gpu], UseChains: false, Churn: true),
            _ => throw new ArgumentException($"Unknown scenario '{scenario}'. Valid: {string.Join(", ", Names)}.", nameof(scenario)),
        };
        return FrameScenarioRunner.Run(spec, strategy, options, progress);
    }
}

/// <summary>The shape of a frame scenario: who produces, who reads, whether readers walk descriptor chains, whether the pool churns.</summary>
internal sealed record FrameScenario(
    string Name, Func<Soc, SimDevice> Producer, Func<Soc, SimDevice[]> Readers, bool UseChains, bool Churn);

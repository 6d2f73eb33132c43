using BenchmarkDotNet.Attributes;
using DmaBuf.Simulation;

namespace DmaBuf.Benchmarks;

/// <summary>
/// Wall time of the playback scenario (120 frames of 1080p, pool 16) under each strategy: what the simulator itself
/// costs per run, DMA of real bytes and verification of every frame included.
/// </summary>
[MemoryDiagnoser]
public class PlaybackBenchmark
{
    [Params(MappingStrategy.Remap, MappingStrategy.KeepAttachment)]
    public string Strategy { get; set; } = MappingStrategy.Remap;

    [Benchmark]
    public long Playback120Frames()
    {
        StrategyResult r = PlaybackScenario.Run(Strategy, new ScenarioOptions { Frames = 120, Pool = 16 });
        return r.Safety.FramesVerified;
    }
}

using System.Diagnostics;

namespace DmaBuf.Simulation;

/// <summary>
/// Runs a frame scenario: a producer device fills a pool of frames, readers read each one, and every reader checks the
/// content byte for byte, so a wrong or stale mapping shows up as a failed frame, not as a log line.
/// </summary>
internal static class FrameScenarioRunner
{
    private static readonly Resolution s_churnAlternate = new(1280, 720);

    public static StrategyResult Run(FrameScenario spec, string strategyName, ScenarioOptions options, IProgress<int>? progress)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var wall = Stopwatch.StartNew();
        Resolution[] resolutions = spec.Churn
            ? [options.Resolution, options.Resolution == s_churnAlternate ? Resolution.Hd1080 : s_churnAlternate]
            : [options.Resolution];
        long largestBuffer = resolutions.Max(r => RoundUp(r.FrameBytes, PhysicalMemory.PageSize));
        var soc = new Soc(new SocOptions
        {
            MemoryBytes = RoundUp((long)(options.Pool * (largestBuffer + PhysicalMemory.PageSize) * 1.25) + (64L << 20), 4L << 20),
            ContiguousBytes = 16L << 20,
            Topology = options.Topology,
            Mode = options.Mode,
            Profile = options.Profile,
            Seed = options.Seed,
        });

        SimDevice producer = spec.Producer(soc);
        SimDevice[] readers = spec.Readers(soc);
        if (!options.Sync)
        {
            soc.SystemHeap.SkipCacheMaintenance = true;
        }

        long verified, stale, staleEntries = 0, retainedPages = 0, peakCached = 0;
        int phaseFrames = spec.Churn ? Math.Max(options.Frames / 5, 1) : int.MaxValue;

        MappingStrategy strategy = MappingStrategy.Create(strategyName, options.CacheBudgetBytes ?? long.MaxValue);
        var run = new FrameRun(soc, strategy, producer, readers, spec.UseChains, options);
        var pool = new DmaBufHandle[options.Pool];
        Resolution current = resolutions[0];
        bool thrashing;
        try
        {
            AllocatePool(soc, pool, current);
            for (int f = 0; f < options.Frames; f++)
            {
                Resolution wanted = resolutions[(f / phaseFrames) % resolutions.Length];
                if (wanted != current)
                {
                    // Resolution change: the producer drains its work and frees its pool. Nothing may keep those
                    // buffers (or their pages, or their mappings) alive; then it allocates the new pool.
                    soc.Clock.RunUntilIdle();
                    FreePool(strategy, pool);
                    retainedPages = Math.Max(retainedPages, soc.Memory.AllocatedPages);
                    staleEntries += soc.Domains.Sum(d => (long)d.LiveMappings);
                    current = wanted;
                    AllocatePool(soc, pool, current);
                }

                soc.Clock.AdvanceTo(Math.Max(soc.Clock.NowNs, f * options.FrameIntervalNs));
                run.Submit(pool[f % pool.Length], f, current.FrameBytes);
                peakCached = Math.Max(peakCached, strategy.CachedBytes);
                if ((f & 15) == 15 || f == options.Frames - 1)
                {
                    progress?.Report(f + 1);
                }
            }

            soc.Clock.RunUntilIdle();
        }
        finally
        {
            thrashing = strategy.IsThrashing;
            strategy.Dispose();
            foreach (DmaBufHandle? h in pool)
            {
                h?.Dispose();
            }
        }

        verified = run.FramesVerified;
        stale = run.StaleReads;
        soc.FlushAll();
        SimStats s = soc.Stats;
        wall.Stop();
        long leaked = soc.Memory.AllocatedPages + soc.Memory.FreePendingPages + retainedPages;
        return new StrategyResult(
            strategy.Name,
            options.Frames,
            options.Pool,
            1 + readers.Length,
            new ResultCounters(
                s.MapCalls, s.UnmapCalls, s.PagesMapped, s.IotlbInvalidations, s.IovaAllocs, strategy.ChainsBuilt,
                strategy.CacheHits, strategy.CacheMisses, strategy.CacheEvictions)
            {
                PeakCachedBytes = peakCached,
            },
            new ResultSimulated(s.MappingNs, (double)s.MappingNs / options.Frames) { ChainNs = strategy.ChainNs },
            new ResultSafety(verified, s.DmaFaults, stale, s.FreedPageAccesses, leaked) { StaleCacheEntries = staleEntries },
            wall.Elapsed.TotalSeconds)
        {
            Warnings = thrashing
                ? [$"{strategy.Name}: the mapping cache thrashes ({strategy.CacheEvictions} evictions, {strategy.CacheHits} hits): its budget is smaller than the pool it serves."]
                : [],
        };
    }

    private static void AllocatePool(Soc soc, DmaBufHandle[] pool, Resolution resolution)
    {
        for (int i = 0; i < pool.Length; i++)
        {
            pool[i] = soc.SystemHeap.Allocate(resolution.FrameBytes + FrameRun.StampBytes, $"frame-{i}");
        }
    }

    private static void FreePool(MappingStrategy strategy, DmaBufHandle[] pool)
    {
        for (int i = 0; i < pool.Length; i++)
        {
            strategy.Retire(pool[i].BufferId);
            pool[i].Dispose();
        }
    }

    private static long RoundUp(long value, long multiple) => (value + multiple - 1) / multiple * multiple;
}

/// <summary>The playback scenario, for callers that want it by type.</summary>
public static class PlaybackScenario
{
    /// <summary>Importers of every frame: decoder, display, GPU.</summary>
    public const int Importers = 3;

    /// <summary>Runs playback under one strategy.</summary>
    public static StrategyResult Run(string strategyName, ScenarioOptions options, IProgress<int>? progress = null) =>
        Scenarios.Run(Scenarios.Playback, strategyName, options, progress);
}

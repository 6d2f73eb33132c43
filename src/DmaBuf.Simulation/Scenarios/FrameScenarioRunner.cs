using System.Diagnostics;

namespace DmaBuf.Simulation;

/// <summary>
/// Runs a frame scenario: a producer device fills a pool of frames, readers read each one, and every reader checks the
/// content byte for byte, so a wrong or stale mapping shows up as a failed frame, not as a log line.
/// </summary>
internal static class FrameScenarioRunner
{
    public static StrategyResult Run(Scenario scenario, string strategyName, ScenarioOptions options, IProgress<int>? progress)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (options.Consumers > scenario.ConsumerPlans.Count)
        {
            throw new ArgumentException(
                $"consumers must be between 1 and {scenario.ConsumerPlans.Count} for {scenario.Name} (its consumers: {string.Join(", ", scenario.Consumers)}); got {options.Consumers}.");
        }

        var wall = Stopwatch.StartNew();
        Resolution[] resolutions = scenario.Churn is { } churn
            ? [options.Resolution, options.Resolution == churn.Alternate ? Resolution.Hd1080 : churn.Alternate]
            : [options.Resolution];
        int[] frameBytes = [.. resolutions.Select(r => r.BytesIn(options.Format))];
        long largestBuffer = frameBytes.Max(b => RoundUp(b, PhysicalMemory.PageSize));
        SocLayout layout = scenario.Layout.WithProfile(options.Profile);
        var soc = new Soc(
            new SocOptions
            {
                MemoryBytes = RoundUp((long)(options.Pool * (largestBuffer + PhysicalMemory.PageSize) * 1.25) + (64L << 20), 4L << 20),
                ContiguousBytes = 16L << 20,
                Topology = options.Topology,
                Mode = options.Mode,
                Profile = options.Profile ?? (layout.Iommus.Count > 0 ? layout.Iommus[0].Profile : CostProfile.Load("smmuv3-strict")),
                Seed = options.Seed,
            },
            layout);

        // Host memory: the SoC's memory is allocated up front; what grows after it is what the run keeps per buffer. The
        // baseline is taken after a full collection, so garbage of an earlier run in the same process (the CLI runs the
        // strategies one after another) neither inflates it nor is later subtracted from this run's growth.
        long heapAfterSoc = GC.GetTotalMemory(forceFullCollection: true);
        long peakHeap = heapAfterSoc;
        long liveHeap = heapAfterSoc;
        SimDevice producer = soc.Named(scenario.Producer);
        ConsumerPlan[] consumers = [.. scenario.ConsumerPlans.Take(options.Consumers ?? scenario.ConsumerPlans.Count)];
        SimDevice[] readers = [.. consumers.Select(c => soc.Named(c.Device))];
        if (!options.CacheSync)
        {
            soc.SystemHeap.SkipCacheMaintenance = true;
        }

        long verified, stale, staleEntries = 0, retainedPages = 0, peakCached = 0;
        int phaseFrames = scenario.Churn is { } c ? Math.Max(options.Frames / c.Phases, 1) : int.MaxValue;

        RogueDevice? rogue = null;
        if (options.RogueDevice)
        {
            rogue = readers[0].SimAddressSpace is IommuDomain domain
                ? new RogueDevice(readers[0], domain, soc.Memory, soc.Clock, domain.Unit.Profile)
                : throw new ArgumentException($"The rogue device is the first consumer, '{readers[0].Name}', which has no IOMMU: without one nothing stands between it and memory. Give it an IOMMU group in the scenario.");
        }

        MappingStrategy strategy = MappingStrategy.Create(strategyName, options.CacheBudgetBytes ?? long.MaxValue);
        var run = new FrameRun(soc, strategy, producer, readers, [.. consumers.Select(x => x.HoldNs)], options);
        var pool = new DmaBufHandle[options.Pool];
        Resolution current = resolutions[0];
        int bytes = frameBytes[0];
        bool thrashing;
        try
        {
            AllocatePool(soc, pool, bytes);
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
                    bytes = frameBytes[Array.IndexOf(resolutions, wanted)];
                    AllocatePool(soc, pool, bytes);
                }

                soc.Clock.AdvanceTo(Math.Max(soc.Clock.NowNs, f * options.FrameIntervalNs));
                run.Submit(pool[f % pool.Length], f, bytes);
                peakCached = Math.Max(peakCached, strategy.CachedBytes);
                if ((f & 15) == 15 || f == options.Frames - 1)
                {
                    peakHeap = Math.Max(peakHeap, GC.GetTotalMemory(forceFullCollection: false));
                    progress?.Report(f + 1);
                }
            }

            // The run at its fullest (the pool allocated, every cache filled, the last frames in flight), garbage
            // collected first. Nothing simulated depends on the collector; its time stays out of the wall time.
            wall.Stop();
            liveHeap = GC.GetTotalMemory(forceFullCollection: true);
            wall.Start();
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

        if (rogue is not null)
        {
            // Let the rogue's accesses after the teardown's unmaps happen, each in its window, before the final flush.
            soc.Clock.RunUntilIdle();
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
            new ResultSafety(verified, s.DmaFaults, stale, s.FreedPageAccesses, leaked)
            {
                StaleCacheEntries = staleEntries,
                OvertakingReads = run.OvertakingReads,
                StaleCacheLineReads = run.CacheLineReads,
            },
            wall.Elapsed.TotalSeconds)
        {
            Warnings = thrashing
                ? [$"{strategy.Name}: the mapping cache thrashes ({strategy.CacheEvictions} evictions, {strategy.CacheHits} hits): its budget is smaller than the pool it serves."]
                : [],
            Rogue = rogue?.Report(),
            Memory = new ResultMemory(peakHeap, Math.Max(0, peakHeap - heapAfterSoc) / options.Pool)
            {
                LiveHeapBytesPerBuffer = Math.Max(0, liveHeap - heapAfterSoc) / options.Pool,
            },
        };
    }

    private static void AllocatePool(Soc soc, DmaBufHandle[] pool, int frameBytes)
    {
        for (int i = 0; i < pool.Length; i++)
        {
            pool[i] = soc.SystemHeap.Allocate(frameBytes + FrameRun.StampBytes, $"frame-{i}");
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

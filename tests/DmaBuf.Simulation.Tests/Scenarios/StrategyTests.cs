namespace DmaBuf.Simulation.Tests;

public sealed class StrategyTests
{
    private static ScenarioOptions Options(Topology topology = Topology.Separate, int frames = 48, int pool = 8, long? budget = null, IommuMode? mode = null) => new()
    {
        Frames = frames,
        Pool = pool,
        Resolution = new Resolution(640, 360),
        Topology = topology,
        CacheBudgetBytes = budget,
        Mode = mode,
    };

    [Theory]
    [InlineData(MappingStrategy.Meta)]
    [InlineData(MappingStrategy.ExporterCache)]
    [InlineData(MappingStrategy.DomainShare)]
    [InlineData(MappingStrategy.KeepAttachment)]
    public void Playback_CachingStrategies_MapOncePerBufferAndImporter(string strategy)
    {
        StrategyResult r = Scenarios.Run(Scenarios.Playback, strategy, Options());

        Assert.Equal(8 * 3, r.Counters.MapCalls);
        Assert.Equal(48 * 3 - 8 * 3, r.Counters.CacheHits);
        Assert.Equal(48, r.Safety.FramesVerified);
        Assert.True(r.Safety.Ok, r.Safety.ToString());
    }

    [Theory]
    [InlineData(IommuMode.Strict)]
    [InlineData(IommuMode.Lazy)]
    public void Playback_DomainShare_SharedTopology_OneMappingServesAllDevices(IommuMode mode)
    {
        StrategyResult r = Scenarios.Run(Scenarios.Playback, MappingStrategy.DomainShare, Options(Topology.Shared, mode: mode));

        Assert.Equal(8, r.Counters.MapCalls);
        Assert.Equal(48, r.Safety.FramesVerified);
        Assert.True(r.Safety.Ok, r.Safety.ToString());
    }

    [Theory]
    [InlineData(MappingStrategy.Meta, 8)]
    [InlineData(MappingStrategy.DomainShare, 8)]
    [InlineData(MappingStrategy.ExporterCache, 16)]
    [InlineData(MappingStrategy.KeepAttachment, 16)]
    [InlineData(MappingStrategy.Remap, 48 * 2)]
    public void Camera_ChainSharing_OneChainPerBuffer_WithoutIt_OnePerUse(string strategy, int chains)
    {
        StrategyResult r = Scenarios.Run(Scenarios.Camera, strategy, Options());

        Assert.Equal(chains, r.Counters.ChainsBuilt);
        Assert.Equal(48, r.Safety.FramesVerified);
        Assert.True(r.Safety.Ok, r.Safety.ToString());
    }

    [Theory]
    [InlineData(MappingStrategy.Remap, IommuMode.Strict)]
    [InlineData(MappingStrategy.KeepAttachment, IommuMode.Strict)]
    [InlineData(MappingStrategy.Meta, IommuMode.Strict)]
    [InlineData(MappingStrategy.ExporterCache, IommuMode.Strict)]
    [InlineData(MappingStrategy.DomainShare, IommuMode.Strict)]
    [InlineData(MappingStrategy.Meta, IommuMode.Lazy)]
    [InlineData(MappingStrategy.ExporterCache, IommuMode.Lazy)]
    public void Churn_CachesLetGo_NothingLeaks(string strategy, IommuMode mode)
    {
        StrategyResult r = Scenarios.Run(Scenarios.Churn, strategy, Options(frames: 60, pool: 6, mode: mode));

        Assert.Equal(0, r.Safety.StaleCacheEntries);
        Assert.Equal(0, r.Safety.LeakedPages);
        Assert.Equal(60, r.Safety.FramesVerified);
        Assert.True(r.Safety.Ok, r.Safety.ToString());
        // Five phases: each new pool is mapped again by every importer.
        Assert.True(r.Counters.MapCalls >= 5 * 6 * 3 || strategy == MappingStrategy.Remap);
    }

    [Fact]
    public void Churn_WithBudget_CachedBytesNeverExceedIt()
    {
        long frame = 640 * 360 * 3 / 2;
        long budget = 4 * ((frame + 4095) & ~4095L);
        StrategyResult r = Scenarios.Run(Scenarios.Churn, MappingStrategy.ExporterCache, Options(frames: 60, pool: 3, budget: budget));

        Assert.True(r.Counters.PeakCachedBytes > 0);
        Assert.True(r.Counters.PeakCachedBytes <= budget * 3, $"{r.Counters.PeakCachedBytes} > {budget * 3}");
        Assert.True(r.Safety.Ok, r.Safety.ToString());
    }

    [Fact]
    public void Budget_SmallerThanPool_ThrashesAndWarns_StillCorrect()
    {
        long frame = (640 * 360 * 3 / 2 + 4095) & ~4095L;
        StrategyResult r = Scenarios.Run(Scenarios.Playback, MappingStrategy.ExporterCache, Options(budget: 4 * frame));

        Assert.Contains(r.Warnings, w => w.Contains("thrashes", StringComparison.Ordinal));
        Assert.True(r.Counters.CacheEvictions > 0);
        Assert.Equal(48 * 3, r.Counters.MapCalls);
        Assert.True(r.Safety.Ok, r.Safety.ToString());
    }

    [Fact]
    public void Budget_LargerThanPool_NoWarning()
    {
        StrategyResult r = Scenarios.Run(Scenarios.Playback, MappingStrategy.ExporterCache, Options(budget: 64L << 20));

        Assert.Empty(r.Warnings);
        Assert.Equal(0, r.Counters.CacheEvictions);
    }

    // domain-share was unbounded: --cache-budget did not apply and its cached bytes read 0 (lifetimes issue 7).
    [Theory]
    [InlineData(Topology.Separate)]
    [InlineData(Topology.Shared)]
    public void DomainShare_Budget_Applies_CountsBytes_AndWarnsWhenSmallerThanThePool(Topology topology)
    {
        long frame = (640 * 360 * 3 / 2 + 4095) & ~4095L;
        StrategyResult unbounded = Scenarios.Run(Scenarios.Playback, MappingStrategy.DomainShare, Options(topology));
        StrategyResult bounded = Scenarios.Run(Scenarios.Playback, MappingStrategy.DomainShare, Options(topology, budget: 4 * frame));

        Assert.True(unbounded.Counters.PeakCachedBytes >= 8 * frame, $"peak {unbounded.Counters.PeakCachedBytes}");
        Assert.Equal(0, unbounded.Counters.CacheEvictions);
        Assert.True(bounded.Counters.CacheEvictions > 0);
        Assert.True(bounded.Counters.PeakCachedBytes <= 4 * frame * (topology == Topology.Shared ? 1 : 3), $"peak {bounded.Counters.PeakCachedBytes}");
        Assert.Contains(bounded.Warnings, w => w.Contains("thrashes", StringComparison.Ordinal));
        Assert.Equal(48, bounded.Safety.FramesVerified);
        Assert.True(bounded.Safety.Ok, bounded.Safety.ToString());
    }

    [Fact]
    public void UnknownStrategy_ListsValidOnes()
    {
        ArgumentException e = Assert.Throws<ArgumentException>(() => MappingStrategy.Create("fastest"));
        Assert.Contains("domain-share", e.Message);
    }
}

/// <summary>The simulator must catch a strategy that gets lifetimes wrong: these strategies are broken on purpose.</summary>
public sealed class SafetyDetectionTests
{
    /// <summary>Keeps device addresses after unmapping them: the use-after-unmap a cache that outlives its mapping does.</summary>
    private sealed class UseAfterUnmapStrategy : MappingStrategy
    {
        private readonly Dictionary<(SimDevice, long), ScatterTable> _stale = [];

        public override string Name => "use-after-unmap";

        public override ScatterTable Acquire(SimDevice device, DmaBufHandle handle, DmaDirection direction)
        {
            if (_stale.TryGetValue((device, handle.BufferId), out ScatterTable? table))
            {
                return table;
            }

            using DmaBufAttachment a = handle.Attach(device);
            table = a.Map(direction);
            _stale[(device, handle.BufferId)] = table;
            return table; // the attachment's Dispose unmaps it right here
        }

        public override void Release(SimDevice device, DmaBufHandle handle, ScatterTable mapping)
        {
        }
    }

    [Fact]
    public void StaleDeviceAddresses_ShowUpAsDmaFaults()
    {
        var soc = new Soc(new SocOptions { MemoryBytes = 64L << 20, Seed = 3 });
        using var strategy = new UseAfterUnmapStrategy();
        using DmaBufHandle buffer = soc.SystemHeap.Allocate(64 * 1024);
        byte[] data = new byte[64 * 1024];

        using (DmaBufHandle use = buffer.Duplicate())
        {
            ScatterTable map = strategy.Acquire(soc.Vpu, use, DmaDirection.FromDevice);
            Assert.False(soc.Vpu.DmaWrite(map, 0, data));
        }

        Assert.True(soc.Stats.DmaFaults > 0);
    }

    [Fact]
    public void ChainFromAnotherDomain_ReadsWrongBytesOrFaults()
    {
        var soc = new Soc(new SocOptions { MemoryBytes = 64L << 20, Seed = 3 });
        using DmaBufHandle buffer = soc.SystemHeap.Allocate(64 * 1024);
        byte[] frame = new byte[64 * 1024];
        byte[] template = new byte[4096];
        FramePattern.Fill(frame, 1, 0, template);
        using DmaBufAttachment isp = buffer.Attach(soc.Isp);
        ScatterTable ispMap = isp.Map(DmaDirection.FromDevice);
        Assert.True(soc.Isp.DmaWrite(ispMap, 0, frame));
        using DmaBufAttachment display = buffer.Attach(soc.Display);
        ScatterTable displayMap = display.Map(DmaDirection.ToDevice);

        // A chain built from the display's device addresses, walked by the encoder in another IOMMU domain.
        DescriptorChain wrong = DescriptorChain.Build(DescriptorChainFormat.VcodecDma, soc.Display.AddressSpace.Id, displayMap);
        byte[] read = new byte[frame.Length];
        bool ok = soc.Encoder.DmaReadChain(wrong, read);

        Assert.False(ok && FramePattern.Verify(read, 1, 0, template));
    }
}

public sealed class DeviceLocalHeapTests
{
    [Fact]
    public void Evict_MovesBytes_InvalidatesCaches_RebuildsOnNextUse()
    {
        var soc = new Soc(new SocOptions { MemoryBytes = 64L << 20, ContiguousBytes = 16L << 20, Seed = 5 });
        using DmaBufHandle buffer = soc.DeviceLocalHeap.Allocate(256 * 1024, "vram");
        byte[] frame = new byte[256 * 1024];
        byte[] template = new byte[4096];
        FramePattern.Fill(frame, 9, 4, template);
        using (DmaBufAttachment gpu = buffer.Attach(soc.Gpu))
        {
            ScatterTable w = gpu.Map(DmaDirection.FromDevice);
            Assert.True(soc.Gpu.DmaWrite(w, 0, frame));
        }

        using var display = new ImportContext(soc.Display);
        ScatterTable before;
        using (ImportedBuffer imp = display.Import(buffer))
        {
            before = imp.Map(DmaDirection.ToDevice);
        }

        ulong oldPfn = soc.DeviceLocalHeap.AllocationOf(buffer.Buffer).Physical.Segments[0].Address >> PhysicalMemory.PageShift;
        long contiguousFreeBefore = soc.Memory.FreePages;

        int invalidated = soc.DeviceLocalHeap.Evict(buffer);

        Assert.True(invalidated >= 1);
        Assert.Equal(1, display.Invalidations);
        Assert.True(soc.DeviceLocalHeap.AllocationOf(buffer.Buffer).Physical.Count > 1, "evicted into scattered system pages");
        Assert.NotEqual(PageState.Allocated, soc.Memory.GetState(oldPfn));
        byte[] read = new byte[frame.Length];
        Assert.False(soc.Display.DmaRead(before, 0, read), "the old mapping is gone");
        using (ImportedBuffer imp = display.Import(buffer))
        {
            ScatterTable after = imp.Map(DmaDirection.ToDevice);
            Assert.True(soc.Display.DmaRead(after, 0, read));
        }

        Assert.True(FramePattern.Verify(read, 9, 4, template));
        Assert.True(contiguousFreeBefore <= soc.Memory.FreePages + 64);
    }

    [Fact]
    public void Evict_PinnedBuffer_IsRefused_AndNothingMoves()
    {
        var soc = new Soc(new SocOptions { MemoryBytes = 64L << 20, ContiguousBytes = 16L << 20, Seed = 5 });
        using DmaBufHandle buffer = soc.DeviceLocalHeap.Allocate(64 * 1024);
        using DmaBufAttachment scanout = buffer.Attach(soc.Display);
        scanout.Pin();
        ScatterTable before = soc.DeviceLocalHeap.AllocationOf(buffer.Buffer).Physical;

        Assert.Throws<InvalidOperationException>(() => soc.DeviceLocalHeap.Evict(buffer));

        Assert.Same(before, soc.DeviceLocalHeap.AllocationOf(buffer.Buffer).Physical);
    }

    [Fact]
    public void Compact_KeepsContent_MetadataMappingRebuilt()
    {
        var soc = new Soc(new SocOptions { MemoryBytes = 64L << 20, ContiguousBytes = 16L << 20, Seed = 5 });
        using DmaBufHandle buffer = soc.DeviceLocalHeap.Allocate(64 * 1024);
        using var owner = new MetadataOwner("gpu driver");
        var key = new MetadataKey<CachedMapping>("gpu mapping");
        byte[] data = [.. Enumerable.Range(0, 64 * 1024).Select(i => (byte)(i * 31))];
        CachedMapping m = buffer.Buffer.Metadata.GetOrAddMapping(key, owner, soc.Gpu, DmaDirection.Bidirectional, out _);
        Assert.True(soc.Gpu.DmaWrite(m.Table, 0, data));

        soc.DeviceLocalHeap.Compact(buffer);

        Assert.True(m.IsReleased);
        CachedMapping again = buffer.Buffer.Metadata.GetOrAddMapping(key, owner, soc.Gpu, DmaDirection.Bidirectional, out bool created);
        Assert.True(created);
        byte[] read = new byte[data.Length];
        Assert.True(soc.Gpu.DmaRead(again.Table, 0, read));
        Assert.Equal(data, read);
    }
}

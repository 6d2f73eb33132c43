namespace DmaBuf.Simulation.Tests;

public sealed class CpuCacheTests
{
    private static (Soc Soc, DmaBufHandle Buffer, DmaBufAttachment Display, ScatterTable Map) Setup()
    {
        var soc = new Soc(new SocOptions { MemoryBytes = 64L << 20, Seed = 2 });
        DmaBufHandle buffer = soc.SystemHeap.Allocate(16 * 1024);
        DmaBufAttachment display = buffer.Attach(soc.Display);
        return (soc, buffer, display, display.Map(DmaDirection.Bidirectional));
    }

    [Fact]
    public void CpuWrite_NotSeenByNonCoherentDevice_UntilEndCpuAccess()
    {
        (Soc soc, DmaBufHandle buffer, DmaBufAttachment display, ScatterTable map) = Setup();
        using (buffer)
        using (display)
        {
            Assert.False(soc.Display.IsCoherent);
            byte[] written = [1, 2, 3, 4, 5, 6, 7, 8];
            byte[] seen = new byte[8];
            using IDmaBufCpuView view = buffer.Vmap();

            buffer.BeginCpuAccess(CpuAccess.Write);
            view.Write(100, written);
            Assert.True(soc.Display.DmaRead(map, 100, seen));
            Assert.NotEqual(written, seen);

            buffer.EndCpuAccess(CpuAccess.Write);
            Assert.True(soc.Display.DmaRead(map, 100, seen));
            Assert.Equal(written, seen);
        }
    }

    [Fact]
    public void DeviceWrite_NotSeenByCpu_UntilBeginCpuAccessForRead()
    {
        (Soc soc, DmaBufHandle buffer, DmaBufAttachment display, ScatterTable map) = Setup();
        using (buffer)
        using (display)
        {
            using IDmaBufCpuView view = buffer.Vmap();
            byte[] before = new byte[8];
            view.Read(0, before); // the CPU now caches the line

            byte[] fromDevice = [9, 9, 9, 9, 9, 9, 9, 9];
            Assert.True(soc.Display.DmaWrite(map, 0, fromDevice));
            byte[] seen = new byte[8];
            view.Read(0, seen);
            Assert.Equal(before, seen);

            buffer.BeginCpuAccess(CpuAccess.Read);
            view.Read(0, seen);
            buffer.EndCpuAccess(CpuAccess.Read);
            Assert.Equal(fromDevice, seen);
        }
    }

    [Fact]
    public void SkipCacheMaintenance_BracketsDoNothing()
    {
        (Soc soc, DmaBufHandle buffer, DmaBufAttachment display, ScatterTable map) = Setup();
        using (buffer)
        using (display)
        {
            soc.SystemHeap.SkipCacheMaintenance = true;
            using IDmaBufCpuView view = buffer.Vmap();
            buffer.BeginCpuAccess(CpuAccess.Write);
            view.Write(0, new byte[] { 42 });
            buffer.EndCpuAccess(CpuAccess.Write);

            byte[] seen = new byte[1];
            Assert.True(soc.Display.DmaRead(map, 0, seen));
            Assert.NotEqual(42, seen[0]);
            Assert.Equal(1, soc.CpuCache.DirtyLines);
        }
    }
}

public sealed class ImplicitSyncTests
{
    private static ScenarioOptions Options(bool sync, long interval = 1_000_000_000L / 60, int pool = 4, bool? fences = null, bool? cacheSync = null) => new()
    {
        Frames = 24,
        Pool = pool,
        Resolution = new Resolution(640, 360),
        Fences = fences ?? sync,
        CacheSync = cacheSync ?? sync,
        FrameIntervalNs = interval,
    };

    [Fact]
    public void NoFences_WithCacheSync_IsCaughtAsOvertaking_Only()
    {
        // Playback's display (4 GB/s) reads faster than the decoder (2 GB/s) writes, so unfenced it overtakes the
        // write. (Camera's codec engines read no faster than the ISP writes: there an unfenced read trails the write.)
        StrategyResult r = Scenarios.Run(Scenarios.Playback, MappingStrategy.Meta, Options(sync: true, fences: false));

        Assert.True(r.Safety.OvertakingReads > 0, r.Safety.ToString());
        Assert.Equal(0, r.Safety.StaleCacheLineReads);
        Assert.Equal(r.Safety.StaleReads, r.Safety.OvertakingReads);
    }

    [Theory]
    [InlineData(Scenarios.Playback)]
    [InlineData(Scenarios.Camera)]
    public void NoCacheSync_WithFences_IsCaughtAsStaleCacheLines_Only(string scenario)
    {
        StrategyResult r = Scenarios.Run(scenario, MappingStrategy.Meta, Options(sync: true, cacheSync: false));

        Assert.True(r.Safety.StaleCacheLineReads > 0, r.Safety.ToString());
        Assert.Equal(0, r.Safety.OvertakingReads);
        Assert.Equal(r.Safety.StaleReads, r.Safety.StaleCacheLineReads);
        Assert.False(r.Safety.Ok);
    }

    [Theory]
    [InlineData(Scenarios.Playback)]
    [InlineData(Scenarios.Camera)]
    public void Sync_ReadersWaitForTheWriteFence_EveryFrameVerifies(string scenario)
    {
        StrategyResult r = Scenarios.Run(scenario, MappingStrategy.Remap, Options(sync: true));

        Assert.Equal(24, r.Safety.FramesVerified);
        Assert.True(r.Safety.Ok, r.Safety.ToString());
    }

    [Theory]
    [InlineData(Scenarios.Playback)]
    [InlineData(Scenarios.Camera)]
    public void NoSync_ReadersOvertakeTheWriter_StaleReads(string scenario)
    {
        StrategyResult r = Scenarios.Run(scenario, MappingStrategy.Meta, Options(sync: false));

        Assert.True(r.Safety.StaleReads > 0);
        Assert.False(r.Safety.Ok);
    }

    [Fact]
    public void Sync_BackToBackFramesInOneBuffer_WriterWaitsForReaders()
    {
        // One buffer, frames submitted with no gap: only the readers' fences stop frame n+1 overwriting frame n mid-read.
        StrategyResult synced = Scenarios.Run(Scenarios.Playback, MappingStrategy.ExporterCache, Options(sync: true, interval: 0, pool: 1));
        StrategyResult unsynced = Scenarios.Run(Scenarios.Playback, MappingStrategy.ExporterCache, Options(sync: false, interval: 0, pool: 1));

        Assert.Equal(24, synced.Safety.FramesVerified);
        Assert.True(synced.Safety.Ok, synced.Safety.ToString());
        Assert.True(unsynced.Safety.StaleReads > 0);
    }
}

// The heap figures are process-wide: run alone, or tests running beside it count towards its growth.
[CollectionDefinition(nameof(RunMemoryTests), DisableParallelization = true)]
public sealed class RunMemoryCollection;

[Collection(nameof(RunMemoryTests))]
public sealed class RunMemoryTests
{
    [Fact]
    public void Memory_IsReported_AndWhatARunKeepsPerBufferIsBounded()
    {
        StrategyResult r = Scenarios.Run(Scenarios.Playback, MappingStrategy.Meta, new ScenarioOptions { Frames = 256, Pool = 64, Resolution = new Resolution(128, 128) });

        Assert.NotNull(r.Memory);
        Assert.True(r.Memory.PeakHeapBytes > 0);
        // A frame's bytes live in the SoC's memory; per buffer the framework, the caches and the IOMMUs keep far less
        // than a megabyte (a per-frame leak would pass that within 256 frames of 64 buffers).
        Assert.InRange(r.Memory.HeapBytesPerBuffer, 0, 1L << 20);

        // Meta keeps an attachment and a mapping per buffer and importer, so the live figure is above zero; garbage
        // only adds to the peak, so the live figure is not above it.
        Assert.InRange(r.Memory.LiveHeapBytesPerBuffer, 1, r.Memory.HeapBytesPerBuffer);
    }
}

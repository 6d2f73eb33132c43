namespace DmaBuf.Simulation.Tests;

public sealed class PlaybackScenarioTests
{
    private static ScenarioOptions Small(Topology topology = Topology.Separate, IommuMode? mode = null, int frames = 24, int pool = 6) => new()
    {
        Frames = frames,
        Pool = pool,
        Resolution = new Resolution(640, 360),
        Topology = topology,
        Mode = mode,
    };

    [Theory]
    [InlineData(Topology.Separate, IommuMode.Strict)]
    [InlineData(Topology.Separate, IommuMode.Lazy)]
    [InlineData(Topology.Shared, IommuMode.Strict)]
    [InlineData(Topology.Shared, IommuMode.Lazy)]
    public void Remap_MapsEveryUse_AndEveryFrameVerifies(Topology topology, IommuMode mode)
    {
        StrategyResult r = PlaybackScenario.Run(MappingStrategy.Remap, Small(topology, mode));

        Assert.Equal(24 * 3, r.Counters.MapCalls);
        Assert.Equal(24 * 3, r.Counters.UnmapCalls);
        Assert.Equal(24, r.Safety.FramesVerified);
        Assert.True(r.Safety.Ok, r.Safety.ToString());
    }

    [Theory]
    [InlineData(IommuMode.Strict)]
    [InlineData(IommuMode.Lazy)]
    public void KeepAttachment_MapsOncePerBufferAndImporter(IommuMode mode)
    {
        StrategyResult r = PlaybackScenario.Run(MappingStrategy.KeepAttachment, Small(mode: mode));

        Assert.Equal(6 * 3, r.Counters.MapCalls);
        Assert.Equal(6 * 3, r.Counters.UnmapCalls);
        Assert.Equal(24 * 3 - 6 * 3, r.Counters.CacheHits);
        Assert.Equal(24, r.Safety.FramesVerified);
        Assert.True(r.Safety.Ok, r.Safety.ToString());
    }

    [Fact]
    public void KeepAttachment_CostsLessMappingTimeThanRemap()
    {
        StrategyResult remap = PlaybackScenario.Run(MappingStrategy.Remap, Small(frames: 60));
        StrategyResult keep = PlaybackScenario.Run(MappingStrategy.KeepAttachment, Small(frames: 60));

        Assert.True(keep.Simulated.MappingNs * 5 < remap.Simulated.MappingNs);
    }

    [Fact]
    public void SameSeed_SameCountersAndTimes_OtherSeed_OtherPlacement()
    {
        StrategyResult a = PlaybackScenario.Run(MappingStrategy.Remap, Small());
        StrategyResult b = PlaybackScenario.Run(MappingStrategy.Remap, Small());

        Assert.Equal(a.Counters, b.Counters);
        Assert.Equal(a.Simulated, b.Simulated);
        Assert.Equal(a.Safety, b.Safety);
    }

    [Fact]
    public void Validate_RejectsBadSettings()
    {
        Assert.Throws<ArgumentException>(() => PlaybackScenario.Run(MappingStrategy.Remap, new ScenarioOptions { Frames = 0 }));
        Assert.Throws<ArgumentException>(() => PlaybackScenario.Run(MappingStrategy.Remap, new ScenarioOptions { Pool = 0 }));
        Assert.Throws<ArgumentException>(() => PlaybackScenario.Run("bogus", Small()));
    }
}

public sealed class FramePatternTests
{
    [Fact]
    public void Verify_AcceptsItsOwnFrame_RejectsOtherFramesSeedsAndCorruption()
    {
        byte[] template = new byte[4096];
        byte[] frame = new byte[3 * 4096 + 100];
        FramePattern.Fill(frame, seed: 5, frameNumber: 12, template);

        Assert.True(FramePattern.Verify(frame, 5, 12, template));
        Assert.False(FramePattern.Verify(frame, 5, 11, template));
        Assert.False(FramePattern.Verify(frame, 6, 12, template));
        Assert.Equal(12, FramePattern.FrameNumberOf(frame));

        frame[2 * 4096 + 17] ^= 1;
        Assert.False(FramePattern.Verify(frame, 5, 12, template));
    }

    [Fact]
    public void Pages_DifferFromEachOther()
    {
        byte[] template = new byte[4096];
        byte[] frame = new byte[2 * 4096];
        FramePattern.Fill(frame, 1, 0, template);

        // A device that read page 0 twice instead of pages 0 and 1 would be caught.
        Assert.False(frame.AsSpan(0, 4096).SequenceEqual(frame.AsSpan(4096, 4096)));
    }
}

public sealed class ResolutionTests
{
    [Theory]
    [InlineData("1080p", 1920, 1080)]
    [InlineData("4K", 3840, 2160)]
    [InlineData("1280x720", 1280, 720)]
    public void Parse_Valid(string text, int w, int h) => Assert.Equal(new Resolution(w, h), Resolution.Parse(text));

    [Theory]
    [InlineData("")]
    [InlineData("720")]
    [InlineData("1281x720")]
    [InlineData("0x0")]
    [InlineData("99999x2")]
    [InlineData("-2x4")]
    public void Parse_Invalid_ThrowsFormatException(string text) => Assert.Throws<FormatException>(() => Resolution.Parse(text));

    [Fact]
    public void FrameBytes_IsNv12() => Assert.Equal(3_110_400, Resolution.Hd1080.FrameBytes);
}

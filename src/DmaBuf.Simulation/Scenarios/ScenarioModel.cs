using System.Globalization;

namespace DmaBuf.Simulation;

/// <summary>A frame size; frames are NV12 (12 bits per pixel: a full-size luma plane and a half-size chroma plane).</summary>
/// <param name="Width">Width in pixels (even).</param>
/// <param name="Height">Height in pixels (even).</param>
public sealed record Resolution(int Width, int Height)
{
    /// <summary>Largest width or height accepted.</summary>
    public const int MaxDimension = 16384;

    /// <summary>1920x1080.</summary>
    public static Resolution Hd1080 { get; } = new(1920, 1080);

    /// <summary>3840x2160.</summary>
    public static Resolution Uhd4K { get; } = new(3840, 2160);

    /// <summary>Bytes of one NV12 frame.</summary>
    public int FrameBytes => checked(Width * Height * 3 / 2);

    /// <summary>Parses <c>1080p</c>, <c>4k</c> or <c>WxH</c>.</summary>
    /// <exception cref="FormatException">The text is none of those, or the size is out of range; the message says why.</exception>
    public static Resolution Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        string t = text.Trim().ToLowerInvariant();
        if (t is "1080p")
        {
            return Hd1080;
        }

        if (t is "4k" or "2160p")
        {
            return Uhd4K;
        }

        string[] parts = t.Split('x');
        if (parts.Length != 2 ||
            !int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int w) ||
            !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int h))
        {
            throw new FormatException($"Resolution '{text}' is not valid; use 1080p, 4k or WxH (for example 1280x720).");
        }

        if (w < 2 || h < 2 || w > MaxDimension || h > MaxDimension || w % 2 != 0 || h % 2 != 0)
        {
            throw new FormatException($"Resolution '{text}': width and height must be even and between 2 and {MaxDimension}.");
        }

        return new Resolution(w, h);
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Width}x{Height}";
}

/// <summary>Settings of one scenario run.</summary>
public sealed class ScenarioOptions
{
    /// <summary>Frames to produce.</summary>
    public int Frames { get; init; } = 600;

    /// <summary>Buffers in the pool (FFmpeg's VAAPI decoder pool: 17 references + 3 in flight).</summary>
    public int Pool { get; init; } = 20;

    /// <summary>Frame size.</summary>
    public Resolution Resolution { get; init; } = Resolution.Hd1080;

    /// <summary>IOMMU topology.</summary>
    public Topology Topology { get; init; } = Topology.Separate;

    /// <summary>Invalidation mode; the profile's default when null.</summary>
    public IommuMode? Mode { get; init; }

    /// <summary>Cost profile.</summary>
    public CostProfile Profile { get; init; } = CostProfile.Load("smmuv3-strict");

    /// <summary>Seed of frame content and physical placement.</summary>
    public int Seed { get; init; } = 1;

    /// <summary>
    /// Whether implicit synchronization is on: the producer's write fence gates the readers, the readers' fences gate the
    /// next write into the buffer, and CPU access brackets do cache maintenance. Off (<c>--no-sync</c>) shows what breaks.
    /// </summary>
    public bool Sync { get; init; } = true;

    /// <summary>Time between frames; 0 submits every frame as soon as the previous one was submitted.</summary>
    public long FrameIntervalNs { get; init; } = 1_000_000_000L / 60;

    /// <summary>Byte budget of the mapping caches: per importer (exporter-cache), per address space (domain-share); unbounded when null.</summary>
    public long? CacheBudgetBytes { get; init; }

    /// <summary>Checks the settings.</summary>
    /// <exception cref="ArgumentException">A setting is out of range; the message names it.</exception>
    public void Validate()
    {
        if (Frames <= 0)
        {
            throw new ArgumentException($"frames must be positive (got {Frames}).");
        }

        if (Pool <= 0 || Pool > 4096)
        {
            throw new ArgumentException($"pool must be between 1 and 4096 (got {Pool}).");
        }

        if (FrameIntervalNs < 0)
        {
            throw new ArgumentException($"frame interval cannot be negative (got {FrameIntervalNs}).");
        }

        if (CacheBudgetBytes is <= 0)
        {
            throw new ArgumentException($"cache budget must be positive (got {CacheBudgetBytes}).");
        }
    }
}

/// <summary>Work done by the hardware and the caches (design §6: work really done, not API calls a cache answered).</summary>
public sealed record ResultCounters(
    long MapCalls,
    long UnmapCalls,
    long PagesMapped,
    long IotlbInvalidations,
    long IovaAllocs,
    long ChainsBuilt,
    long CacheHits,
    long CacheMisses,
    long CacheEvictions)
{
    /// <summary>Most bytes the budgeted mapping caches held at once.</summary>
    public long PeakCachedBytes { get; init; }
}

/// <summary>Simulated time spent on mapping work.</summary>
public sealed record ResultSimulated(long MappingNs, double MappingNsPerFrame)
{
    /// <summary>Simulated time spent building descriptor chains (not part of <see cref="MappingNs"/>).</summary>
    public long ChainNs { get; init; }
}

/// <summary>What the safety checks saw. Anything but <see cref="FramesVerified"/> above zero is a failure.</summary>
public sealed record ResultSafety(long FramesVerified, long DmaFaults, long StaleReads, long FreedPageAccesses, long LeakedPages)
{
    /// <summary>Mappings still alive in an IOMMU domain right after the pool they mapped was freed (churn).</summary>
    public long StaleCacheEntries { get; init; }

    /// <summary>Whether no check failed.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public bool Ok => DmaFaults == 0 && StaleReads == 0 && FreedPageAccesses == 0 && LeakedPages == 0 && StaleCacheEntries == 0;
}

/// <summary>The result of one strategy in one scenario.</summary>
public sealed record StrategyResult(
    string Strategy,
    int Frames,
    int Pool,
    int Importers,
    ResultCounters Counters,
    ResultSimulated Simulated,
    ResultSafety Safety,
    double WallSeconds)
{
    /// <summary>Problems that are not safety failures, such as a cache that thrashes.</summary>
    public IReadOnlyList<string> Warnings { get; init; } = [];
}

using System.Globalization;

namespace DmaBuf.Simulation;

/// <summary>How a frame's pixels are stored, which sets its size in bytes.</summary>
public enum FrameFormat
{
    /// <summary>NV12: 12 bits per pixel, a full-size luma plane and a half-size interleaved chroma plane.</summary>
    Nv12,

    /// <summary>YUYV (YUY2): 16 bits per pixel, packed 4:2:2.</summary>
    Yuyv,

    /// <summary>RGBA, 8 bits per channel: 32 bits per pixel.</summary>
    Rgba,
}

/// <summary>A frame size; <see cref="FrameBytes"/> is its size in NV12, <see cref="BytesIn"/> in any <see cref="FrameFormat"/>.</summary>
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

    /// <summary>Bytes of one frame in <paramref name="format"/>.</summary>
    public int BytesIn(FrameFormat format) => format switch
    {
        FrameFormat.Nv12 => FrameBytes,
        FrameFormat.Yuyv => checked(Width * Height * 2),
        FrameFormat.Rgba => checked(Width * Height * 4),
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, "Unknown frame format."),
    };

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
    /// <summary>Most frames a run accepts.</summary>
    public const int MaxFrames = 10_000_000;

    /// <summary>Most buffers a pool accepts.</summary>
    public const int MaxPool = 16384;

    /// <summary>Frames to produce.</summary>
    public int Frames { get; init; } = 600;

    /// <summary>Buffers in the pool (FFmpeg's VAAPI decoder pool: 17 references + 3 in flight).</summary>
    public int Pool { get; init; } = 20;

    /// <summary>Frame size.</summary>
    public Resolution Resolution { get; init; } = Resolution.Hd1080;

    /// <summary>Pixel format of the frames.</summary>
    public FrameFormat Format { get; init; } = FrameFormat.Nv12;

    /// <summary>
    /// IOMMU topology: <see cref="Topology.Separate"/> keeps the scenario's own units and groups;
    /// <see cref="Topology.Shared"/> puts every device that has an IOMMU into one domain.
    /// </summary>
    public Topology Topology { get; init; } = Topology.Separate;

    /// <summary>How many of the scenario's consumers read each frame (the first ones, in order); all when null.</summary>
    public int? Consumers { get; init; }

    /// <summary>Invalidation mode; the profile's default when null.</summary>
    public IommuMode? Mode { get; init; }

    /// <summary>Cost profile of every IOMMU; when null, each IOMMU has the profile its scenario gives it.</summary>
    public CostProfile? Profile { get; init; }

    /// <summary>Seed of frame content and physical placement.</summary>
    public int Seed { get; init; } = 1;

    /// <summary>
    /// Whether implicit synchronization through fences is on: the producer's write fence gates the readers, the readers'
    /// fences gate the next write into the buffer. Off (<c>--no-fences</c>), readers start at once and can overtake the
    /// write: stale reads.
    /// </summary>
    public bool Fences { get; init; } = true;

    /// <summary>
    /// Whether CPU access brackets do cache maintenance (write back after the CPU stamps a frame). Off
    /// (<c>--no-cache-sync</c>), the stamp can sit in the CPU cache while a non-coherent device reads memory: stale reads.
    /// </summary>
    public bool CacheSync { get; init; } = true;

    /// <summary>
    /// Adds a misbehaving device: the first consumer keeps reading and writing a buffer's old device addresses after each
    /// unmap, as a device with a stale prefetch or a buggy engine would. What it reaches is reported in
    /// <see cref="StrategyResult.Rogue"/>; what it reaches of freed memory counts in <see cref="ResultSafety.FreedPageAccesses"/>.
    /// </summary>
    public bool RogueDevice { get; init; }

    /// <summary>Time between frames; 0 submits every frame as soon as the previous one was submitted.</summary>
    public long FrameIntervalNs { get; init; } = 1_000_000_000L / 60;

    /// <summary>Byte budget of the mapping caches: per importer (exporter-cache), per address space (domain-share); unbounded when null.</summary>
    public long? CacheBudgetBytes { get; init; }

    /// <summary>Checks the settings.</summary>
    /// <exception cref="ArgumentException">A setting is out of range; the message names it.</exception>
    public void Validate()
    {
        if (Frames <= 0 || Frames > MaxFrames)
        {
            throw new ArgumentException($"frames must be between 1 and {MaxFrames} (got {Frames}).");
        }

        if (Pool <= 0 || Pool > MaxPool)
        {
            throw new ArgumentException($"pool must be between 1 and {MaxPool} (got {Pool}).");
        }

        if (Consumers is <= 0)
        {
            throw new ArgumentException($"consumers must be positive (got {Consumers}).");
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

/// <summary>Copies, for callers that change a few settings of a scenario's defaults.</summary>
internal static class ScenarioOptionsCopy
{
    public static ScenarioOptions Copy(this ScenarioOptions o) => o.With();

    /// <summary>A copy with the given settings changed (null keeps the setting).</summary>
    public static ScenarioOptions With(
        this ScenarioOptions o, int? frames = null, int? pool = null, int? consumers = null, Resolution? resolution = null,
        long? budget = null, IommuMode? mode = null, CostProfile? profile = null) => new()
    {
        Frames = frames ?? o.Frames,
        Pool = pool ?? o.Pool,
        Resolution = resolution ?? o.Resolution,
        Format = o.Format,
        Topology = o.Topology,
        Consumers = consumers ?? o.Consumers,
        Mode = mode ?? o.Mode,
        Profile = profile ?? o.Profile,
        Seed = o.Seed,
        Fences = o.Fences,
        CacheSync = o.CacheSync,
        RogueDevice = o.RogueDevice,
        FrameIntervalNs = o.FrameIntervalNs,
        CacheBudgetBytes = budget ?? o.CacheBudgetBytes,
    };
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
    /// <summary>Of <see cref="StaleReads"/>: reads that saw other pixels than the frame's, having overtaken its write (no fences).</summary>
    public long OvertakingReads { get; init; }

    /// <summary>Of <see cref="StaleReads"/>: reads with the frame's pixels but a stale CPU-written stamp, left in the CPU cache (no cache sync).</summary>
    public long StaleCacheLineReads { get; init; }

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

    /// <summary>Host memory the run used (measured, not simulated: it varies a little between runs, like <see cref="WallSeconds"/>).</summary>
    public ResultMemory? Memory { get; init; }

    /// <summary>What the rogue device reached after unmaps (<see cref="ScenarioOptions.RogueDevice"/>); null without one.</summary>
    public RogueReport? Rogue { get; init; }
}

/// <summary>Host memory of a run, sampled every 16 frames.</summary>
/// <param name="PeakHeapBytes">Largest managed heap seen during the run, the simulated SoC's memory included.</param>
/// <param name="HeapBytesPerBuffer">
/// Growth of the heap after the SoC was built, per pool buffer: what the framework, the strategy's caches and the
/// simulated IOMMUs keep per live buffer (frame bytes live in the SoC's memory and are not part of it). An upper bound:
/// garbage not yet collected counts too.
/// </param>
public sealed record ResultMemory(long PeakHeapBytes, long HeapBytesPerBuffer)
{
    /// <summary>
    /// Growth of the heap after the SoC was built, per pool buffer, measured after a full collection at the end of the
    /// frames (before teardown): what the run really keeps per live buffer, garbage excluded. At most
    /// <see cref="HeapBytesPerBuffer"/> apart from what was allocated after the last sample.
    /// </summary>
    public long LiveHeapBytesPerBuffer { get; init; }
}

/// <summary>
/// What a device that keeps using its old device addresses after unmap reached. The window is the time from an unmap to
/// the invalidation that ends it (0 in strict mode; until the flush in lazy modes).
/// </summary>
/// <param name="Device">The misbehaving device.</param>
/// <param name="Accesses">Accesses it made to addresses already unmapped.</param>
/// <param name="Blocked">Of those, the ones the IOMMU refused (a fault, not counted as a safety failure: it is the rogue's).</param>
/// <param name="Reached">Of those, the ones that still translated and touched memory.</param>
/// <param name="FreedPageAccesses">Of those reaching memory, the ones that touched pages already freed.</param>
/// <param name="BytesReachableAfterFree">Bytes of freed pages that stayed reachable through stale translations, summed over unmaps.</param>
/// <param name="WindowP50Ns">Median time from an unmap to its invalidation.</param>
/// <param name="WindowMaxNs">Longest time from an unmap to its invalidation.</param>
public sealed record RogueReport(
    string Device, long Accesses, long Blocked, long Reached, long FreedPageAccesses, long BytesReachableAfterFree, long WindowP50Ns, long WindowMaxNs);

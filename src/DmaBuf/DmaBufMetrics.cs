using System.Diagnostics.Metrics;

namespace DmaBuf;

/// <summary>
/// The framework's <see cref="Meter"/>, named <see cref="MeterName"/>: counters of the work the framework asks
/// exporters and caches to do. <c>dotnet-counters monitor --counters DmaBuf</c> reads it with no extra code.
/// </summary>
public static class DmaBufMetrics
{
    /// <summary>Name of the meter.</summary>
    public const string MeterName = "DmaBuf";

    internal static readonly Meter s_meter = new(MeterName, "1.0");

    internal static readonly Counter<long> s_exports =
        s_meter.CreateCounter<long>("dmabuf.exports", "{buffer}", "Buffers exported.");

    internal static readonly Counter<long> s_releases =
        s_meter.CreateCounter<long>("dmabuf.releases", "{buffer}", "Buffers released (exporter release ran).");

    internal static readonly Counter<long> s_maps =
        s_meter.CreateCounter<long>("dmabuf.maps", "{mapping}", "Mappings created by exporters for attachments.");

    internal static readonly Counter<long> s_unmaps =
        s_meter.CreateCounter<long>("dmabuf.unmaps", "{mapping}", "Mappings torn down.");

    internal static readonly Counter<long> s_bytesMapped =
        s_meter.CreateCounter<long>("dmabuf.bytes_mapped", "By", "Bytes covered by the mappings created.");

    internal static readonly Counter<long> s_cacheHits =
        s_meter.CreateCounter<long>("dmabuf.cache.hits", "{lookup}", "Mapping or import cache lookups served from the cache.");

    internal static readonly Counter<long> s_cacheMisses =
        s_meter.CreateCounter<long>("dmabuf.cache.misses", "{lookup}", "Mapping or import cache lookups that had to create.");

    internal static readonly Counter<long> s_cacheEvictions =
        s_meter.CreateCounter<long>("dmabuf.cache.evictions", "{entry}", "Cache entries evicted to stay within budget.");

    internal static readonly Counter<long> s_invalidations =
        s_meter.CreateCounter<long>("dmabuf.invalidations", "{entry}", "Cached mappings or metadata invalidated because a buffer moved.");

    internal static readonly Counter<long> s_fencesSignaled =
        s_meter.CreateCounter<long>("dmabuf.fences.signaled", "{fence}", "Fences signaled, with or without an error.");

    internal static readonly UpDownCounter<long> s_liveBuffers =
        s_meter.CreateUpDownCounter<long>("dmabuf.buffers.live", "{buffer}", "Buffers exported and not yet released.");
}

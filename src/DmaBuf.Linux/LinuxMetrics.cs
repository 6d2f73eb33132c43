using System.Diagnostics.Metrics;

namespace DmaBuf.Linux;

/// <summary>
/// The Linux backend's <see cref="Meter"/>, named <see cref="MeterName"/>: mmap cache hits, misses and evictions,
/// mmaps and munmaps, buffers imported. Read it with <c>dotnet-counters monitor --counters DmaBuf,DmaBuf.Linux</c>.
/// </summary>
public static class LinuxMetrics
{
    /// <summary>Name of the meter.</summary>
    public const string MeterName = "DmaBuf.Linux";

    internal static readonly Meter s_meter = new(MeterName, "1.0");

    internal static readonly Counter<long> s_mmapHits =
        s_meter.CreateCounter<long>("dmabuf.linux.mmap_cache.hits", "{lookup}", "CPU mapping requests served by a cached mmap.");

    internal static readonly Counter<long> s_mmapMisses =
        s_meter.CreateCounter<long>("dmabuf.linux.mmap_cache.misses", "{lookup}", "CPU mapping requests that needed a new mmap.");

    internal static readonly Counter<long> s_mmapEvictions =
        s_meter.CreateCounter<long>("dmabuf.linux.mmap_cache.evictions", "{mapping}", "Mappings the byte budget pushed out of the cache.");

    internal static readonly Counter<long> s_mmaps =
        s_meter.CreateCounter<long>("dmabuf.linux.mmaps", "{mapping}", "mmap calls made.");

    internal static readonly Counter<long> s_munmaps =
        s_meter.CreateCounter<long>("dmabuf.linux.munmaps", "{mapping}", "munmap calls made.");

    internal static readonly Counter<long> s_bytesMapped =
        s_meter.CreateCounter<long>("dmabuf.linux.bytes_mapped", "By", "Bytes mapped by mmap.");

    internal static readonly Counter<long> s_imports =
        s_meter.CreateCounter<long>("dmabuf.linux.imports", "{buffer}", "Buffers imported from a descriptor (import cache misses).");

    internal static readonly Counter<long> s_importHits =
        s_meter.CreateCounter<long>("dmabuf.linux.import_cache.hits", "{lookup}", "Imports that found the buffer already imported.");
}

using System.Text.Json.Serialization;

namespace DmaBuf.Cli;

/// <summary>The document <c>dmabuf share --json</c> prints. Times are microseconds, measured in this run.</summary>
internal sealed record ShareReport(
    string Exporter,
    string Resolution,
    long FrameBytes,
    int Frames,
    int Pool,
    double HandoffP50Us,
    double HandoffP99Us,
    double SocketRoundTripP50Us,
    double SocketRoundTripP99Us,
    double SocketRoundTripIdleP50Us,
    double CopyP50Us,
    double CopyP99Us,
    double RemapP50Us,
    double RemapP99Us,
    double HandoffVsRoundTrip,
    double CopyVsHandoff,
    double RemapVsHandoff,
    int FramesVerified,
    int RemapFramesVerified,
    int CopyFramesVerified,
    int FramesFailed,
    int LeakedFds,
    int ConsumerLeakedFds,
    int ProducerLeakedFds,
    long DescriptorsSent,
    ConsumerCacheReport ConsumerMappingCache);

/// <summary>The consumer's mmap cache counters over the run.</summary>
internal sealed record ConsumerCacheReport(long Hits, long Misses, long Evictions, long MapCalls, long UnmapCalls, int LiveMappingsAtEnd);

/// <summary>What the consumer process reports on its last line of output.</summary>
internal sealed record ConsumerResult(
    int Verified, int RemapVerified, int CopyVerified, int Failed, int LeakedFds, ConsumerCacheReport Cache);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = true)]
[JsonSerializable(typeof(ShareReport))]
internal sealed partial class ShareJsonContext : JsonSerializerContext;

/// <summary>One line per document: the consumer's report is a single line of its output.</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(ConsumerResult))]
internal sealed partial class ConsumerJsonContext : JsonSerializerContext;

using System.Text.Json.Serialization;

namespace DmaBuf.Cli;

/// <summary>The document <c>dmabuf share --json</c> prints. Times are microseconds, measured in this run.</summary>
internal sealed record ShareReport(
    string Exporter,
    string Resolution,
    long FrameBytes,
    int Frames,
    int Pool,
    string Transport,
    double HandoffP50Us,
    double HandoffP99Us,
    double FirstSendP50Us,
    double? RingHandoffP50Us,
    double? RingHandoffP99Us,
    double SocketRoundTripP50Us,
    double SocketRoundTripP99Us,
    double SocketRoundTripIdleP50Us,
    double SharedMemoryRoundTripP50Us,
    double SharedMemoryRoundTripP99Us,
    double SharedMemoryRoundTripInRhythmP50Us,
    double CopyP50Us,
    double CopyP99Us,
    double RemapP50Us,
    double RemapP99Us,
    double HandoffVsRoundTrip,
    double CopyVsHandoff,
    double RemapVsHandoff,
    ConsumerCpuReport ConsumerCpuUsPerFrame,
    RingReport? Ring,
    int FramesVerified,
    int RemapFramesVerified,
    int CopyFramesVerified,
    int RingFramesVerified,
    int FramesFailed,
    int LeakedFds,
    int ConsumerLeakedFds,
    int ProducerLeakedFds,
    long DescriptorsSent,
    ConsumerCacheReport ConsumerMappingCache);

/// <summary>
/// What one registered frame costs the consumer's thread in CPU, waiting included (µs per frame), per transport; the
/// ring's is null when it was not measured.
/// </summary>
internal sealed record ConsumerCpuReport(double Socket, double? Ring);

/// <summary>The ring phase (<c>--transport ring</c>): its handoff and its ratios to the figures of the same run.</summary>
internal sealed record RingReport(
    string Wait,
    double HandoffP50Us,
    double HandoffP99Us,
    double FirstSendP50Us,
    double RingVsSharedMemory,
    double RingVsSharedMemoryInRhythm,
    double SocketHandoffVsRing,
    double CopyVsRing,
    double RingVsSocketRoundTripIdle,
    double ConsumerCpuUsPerFrame,
    long WakeUpsSent);

/// <summary>The consumer's mmap cache counters over the run.</summary>
internal sealed record ConsumerCacheReport(long Hits, long Misses, long Evictions, long MapCalls, long UnmapCalls, int LiveMappingsAtEnd);

/// <summary>What the consumer process reports on its last line of output.</summary>
internal sealed record ConsumerResult(
    int Verified, int RemapVerified, int CopyVerified, int Failed, int LeakedFds, ConsumerCacheReport Cache,
    int RingVerified, double SocketCpuUsPerFrame, double RingCpuUsPerFrame);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = true, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals)]
[JsonSerializable(typeof(ShareReport))]
internal sealed partial class ShareJsonContext : JsonSerializerContext;

/// <summary>One line per document: the consumer's report is a single line of its output.</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals)]
[JsonSerializable(typeof(ConsumerResult))]
internal sealed partial class ConsumerJsonContext : JsonSerializerContext;

using System.Text.Json.Serialization;
using DmaBuf.Simulation;

namespace DmaBuf.Cli;

/// <summary>The settings a simulation ran with, echoed in its JSON document.</summary>
internal sealed record SimulationSettings(
    string Source, string Profile, string Iommu, string Topology, string Resolution, string Format, int Frames, int Pool,
    int Consumers, int Seed, bool Fences, bool CacheSync, bool RogueDevice);

/// <summary>The document <c>dmabuf simulate --json</c> prints.</summary>
internal sealed record SimulationReport(string Scenario, SimulationSettings Settings, IReadOnlyList<StrategyResult> Results);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = true)]
[JsonSerializable(typeof(SimulationReport))]
[JsonSerializable(typeof(SweepReport))]
[JsonSerializable(typeof(LsReport))]
internal sealed partial class CliJsonContext : JsonSerializerContext;

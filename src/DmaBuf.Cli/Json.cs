using System.Text.Json.Serialization;
using DmaBuf.Simulation;

namespace DmaBuf.Cli;

/// <summary>The settings a simulation ran with, echoed in its JSON document.</summary>
internal sealed record SimulationSettings(
    string Profile, string Iommu, string Topology, string Resolution, int Frames, int Pool, int Seed, bool Sync);

/// <summary>The document <c>dmabuf simulate --json</c> prints.</summary>
internal sealed record SimulationReport(string Scenario, SimulationSettings Settings, IReadOnlyList<StrategyResult> Results);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = true)]
[JsonSerializable(typeof(SimulationReport))]
[JsonSerializable(typeof(LsReport))]
internal sealed partial class CliJsonContext : JsonSerializerContext;

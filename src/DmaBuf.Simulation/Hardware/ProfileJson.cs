using System.Text.Json;
using System.Text.Json.Serialization;

namespace DmaBuf.Simulation;

// The JSON shape of a cost profile. Parsed with a source-generated context: the library is AOT-compatible, so no
// reflection-based serialization.
internal sealed class ProfileDocument
{
    public string? Name { get; set; }

    public string? Description { get; set; }

    public string? DefaultMode { get; set; }

    public Dictionary<string, ProfileParameter>? Parameters { get; set; }
}

internal sealed class ProfileParameter
{
    public JsonElement Value { get; set; }

    public string? Source { get; set; }
}

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    ReadCommentHandling = JsonCommentHandling.Skip,
    AllowTrailingCommas = true,
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow)]
[JsonSerializable(typeof(ProfileDocument))]
internal sealed partial class ProfileJsonContext : JsonSerializerContext
{
}

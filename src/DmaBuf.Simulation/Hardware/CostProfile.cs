using System.Globalization;
using System.Reflection;
using System.Text;
using System.Text.Json;

namespace DmaBuf.Simulation;

/// <summary>
/// The costs and sizes of one kind of IOMMU hardware and its driver: what a map, an unmap, an invalidation and an IOVA
/// allocation cost in simulated nanoseconds, and how large the IOTLB and the lazy flush queue are. Immutable.
/// </summary>
/// <remarks>
/// Profiles ship as JSON resources (see <see cref="BuiltInNames"/>) and can be loaded from a file. Every parameter in a
/// profile carries its value and its source — a publication, a kernel source file, or the word "estimate" — so a
/// reported figure can be traced to where its inputs came from. A file must give every parameter; unknown, missing and
/// negative parameters are errors that name the parameter.
/// </remarks>
public sealed class CostProfile
{
    private static readonly string[] s_builtInNames = ["smmuv3-strict", "vtd-lazy"];

    // Upper bounds: a time is at most one second per operation (published figures are below 100 µs; a bigger value is a
    // typing mistake, and keeps every product of a cost and a page count inside 64 bits); a count is bounded by what
    // the simulator allocates for it (one IOTLB slot per entry) or by what any IOMMU driver uses.
    private const long MaxNs = 1_000_000_000;
    private const long MaxCount = 1 << 20;

    private static readonly ParameterInfo[] s_parameters =
    [
        new("mapCallNs", false, 0, MaxNs),
        new("pteWriteNs", false, 0, MaxNs),
        new("unmapCallNs", false, 0, MaxNs),
        new("pteClearNs", false, 0, MaxNs),
        new("tlbiCommandNs", false, 0, MaxNs),
        new("tlbiBatchSize", false, 1, MaxCount),
        new("cmdSyncNs", false, 0, MaxNs),
        new("rangeInvalidation", true, 0, 1),
        new("rangeTlbiNs", false, 0, MaxNs),
        new("maxTlbiOpsBeforeFullInvalidate", false, 0, MaxCount),
        new("fullInvalidateNs", false, 0, MaxNs),
        new("iovaAllocNs", false, 0, MaxNs),
        new("iovaCachedAllocNs", false, 0, MaxNs),
        new("iovaFreeNs", false, 0, MaxNs),
        new("flushQueueEntries", false, 1, MaxCount),
        new("flushTimeoutNs", false, 0, MaxNs),
        new("flushNs", false, 0, MaxNs),
        new("iotlbEntries", false, 1, MaxCount),
        new("pageWalkNs", false, 0, MaxNs),
    ];

    private readonly long[] _values;
    private readonly string[] _sources;

    private CostProfile(string name, string description, IommuMode defaultMode, long[] values, string[] sources)
    {
        Name = name;
        Description = description;
        DefaultMode = defaultMode;
        _values = values;
        _sources = sources;
    }

    private enum Id
    {
        MapCallNs,
        PteWriteNs,
        UnmapCallNs,
        PteClearNs,
        TlbiCommandNs,
        TlbiBatchSize,
        CmdSyncNs,
        RangeInvalidation,
        RangeTlbiNs,
        MaxTlbiOpsBeforeFullInvalidate,
        FullInvalidateNs,
        IovaAllocNs,
        IovaCachedAllocNs,
        IovaFreeNs,
        FlushQueueEntries,
        FlushTimeoutNs,
        FlushNs,
        IotlbEntries,
        PageWalkNs,
    }

    /// <summary>Names of the profiles shipped with the library, loadable with <see cref="Load"/>.</summary>
    public static IReadOnlyList<string> BuiltInNames => s_builtInNames;

    /// <summary>JSON names of every parameter a profile must give, in the order of <see cref="Parameters"/>.</summary>
    public static IReadOnlyList<string> ParameterNames { get; } = Array.ConvertAll(s_parameters, p => p.Name);

    /// <summary>The profile's name, e.g. <c>smmuv3-strict</c>.</summary>
    public string Name { get; }

    /// <summary>What hardware and driver the profile describes.</summary>
    public string Description { get; }

    /// <summary>The invalidation mode the platform's kernel uses by default.</summary>
    public IommuMode DefaultMode { get; }

    /// <summary>Fixed cost of one map call (driver entry, DMA-API bookkeeping), IOVA allocation and PTE writes excluded.</summary>
    public long MapCallNs => _values[(int)Id.MapCallNs];

    /// <summary>Cost of writing one page-table leaf entry (a 4 KiB page or a 2 MiB block).</summary>
    public long PteWriteNs => _values[(int)Id.PteWriteNs];

    /// <summary>Fixed cost of one unmap call, invalidation and IOVA free excluded.</summary>
    public long UnmapCallNs => _values[(int)Id.UnmapCallNs];

    /// <summary>Cost of clearing one page-table leaf entry.</summary>
    public long PteClearNs => _values[(int)Id.PteClearNs];

    /// <summary>Cost of issuing one per-leaf IOTLB invalidation command (SMMUv3 <c>CMD_TLBI_NH_VA</c>).</summary>
    public long TlbiCommandNs => _values[(int)Id.TlbiCommandNs];

    /// <summary>Per-leaf invalidation commands sent in one batch; every batch ends with a sync.</summary>
    public long TlbiBatchSize => _values[(int)Id.TlbiBatchSize];

    /// <summary>Cost of one sync: waiting for the IOMMU to complete the commands before it (<c>CMD_SYNC</c>, a VT-d wait descriptor).</summary>
    public long CmdSyncNs => _values[(int)Id.CmdSyncNs];

    /// <summary>Whether one command invalidates a whole range (VT-d page-selective with an address mask, SMMUv3 RIL).</summary>
    public bool RangeInvalidation => _values[(int)Id.RangeInvalidation] != 0;

    /// <summary>Cost of one range invalidation command, sync excluded.</summary>
    public long RangeTlbiNs => _values[(int)Id.RangeTlbiNs];

    /// <summary>
    /// Per-leaf commands at or above which one invalidation of the whole domain replaces them (Linux
    /// <c>CMDQ_MAX_TLBI_OPS</c>); 0 means never.
    /// </summary>
    public long MaxTlbiOpsBeforeFullInvalidate => _values[(int)Id.MaxTlbiOpsBeforeFullInvalidate];

    /// <summary>Cost of invalidating a whole domain (ASID) in strict mode, sync included.</summary>
    public long FullInvalidateNs => _values[(int)Id.FullInvalidateNs];

    /// <summary>Cost of allocating an IOVA range from the allocator's tree.</summary>
    public long IovaAllocNs => _values[(int)Id.IovaAllocNs];

    /// <summary>Cost of allocating an IOVA range from the per-size cache.</summary>
    public long IovaCachedAllocNs => _values[(int)Id.IovaCachedAllocNs];

    /// <summary>Cost of freeing an IOVA range.</summary>
    public long IovaFreeNs => _values[(int)Id.IovaFreeNs];

    /// <summary>Entries a lazy-mode flush queue holds before it is flushed.</summary>
    public long FlushQueueEntries => _values[(int)Id.FlushQueueEntries];

    /// <summary>Time after the oldest queued entry at which a lazy-mode flush queue is flushed anyway.</summary>
    public long FlushTimeoutNs => _values[(int)Id.FlushTimeoutNs];

    /// <summary>Cost of one lazy-mode flush: invalidating the whole domain and waiting for it, IOVA frees excluded.</summary>
    public long FlushNs => _values[(int)Id.FlushNs];

    /// <summary>Entries the IOTLB holds (shared by all domains of one IOMMU unit).</summary>
    public long IotlbEntries => _values[(int)Id.IotlbEntries];

    /// <summary>Time the IOMMU needs to walk the page table after an IOTLB miss.</summary>
    public long PageWalkNs => _values[(int)Id.PageWalkNs];

    /// <summary>Every parameter with its value and source, in the order of <see cref="ParameterNames"/>.</summary>
    public IReadOnlyList<CostParameter> Parameters
    {
        get
        {
            var list = new CostParameter[s_parameters.Length];
            for (int i = 0; i < list.Length; i++)
            {
                list[i] = new CostParameter(s_parameters[i].Name, _values[i], s_parameters[i].IsFlag, _sources[i]);
            }

            return list;
        }
    }

    /// <summary>
    /// Loads a built-in profile by name (see <see cref="BuiltInNames"/>), or a profile from a JSON file when
    /// <paramref name="nameOrPath"/> is not a built-in name.
    /// </summary>
    /// <exception cref="CostProfileException">
    /// The name is neither built in nor an existing file (the message lists the valid names), or the file is not a
    /// valid profile (the message names the problem).
    /// </exception>
    public static CostProfile Load(string nameOrPath)
    {
        ArgumentNullException.ThrowIfNull(nameOrPath);
        if (Array.IndexOf(s_builtInNames, nameOrPath) >= 0)
        {
            return Parse(ReadResource(nameOrPath), $"built-in profile '{nameOrPath}'");
        }

        if (Directory.Exists(nameOrPath))
        {
            throw new CostProfileException(
                $"Cost profile '{nameOrPath}' is a directory; give a profile .json file or a built-in name: {string.Join(", ", s_builtInNames)}.");
        }

        if (!File.Exists(nameOrPath))
        {
            bool looksLikePath = nameOrPath.Contains('/', StringComparison.Ordinal) ||
                nameOrPath.EndsWith(".json", StringComparison.OrdinalIgnoreCase);
            throw new CostProfileException(looksLikePath
                ? $"Cost profile file '{nameOrPath}' does not exist. Built-in profiles: {string.Join(", ", s_builtInNames)}."
                : $"Unknown cost profile '{nameOrPath}'. Valid names: {string.Join(", ", s_builtInNames)}; or give the path of a profile .json file.");
        }

        string text;
        try
        {
            text = File.ReadAllText(nameOrPath);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new CostProfileException($"Cost profile file '{nameOrPath}' cannot be read: {ex.Message}", ex);
        }

        return Parse(text, $"file '{nameOrPath}'");
    }

    /// <summary>Parses a profile from JSON text.</summary>
    /// <param name="json">The profile document.</param>
    /// <param name="origin">Where the text came from, for error messages.</param>
    /// <exception cref="CostProfileException">The text is not a valid profile; the message names the problem.</exception>
    public static CostProfile Parse(string json, string origin = "cost profile")
    {
        ArgumentNullException.ThrowIfNull(json);
        ProfileDocument? doc;
        try
        {
            doc = JsonSerializer.Deserialize(json, ProfileJsonContext.Default.ProfileDocument);
        }
        catch (JsonException ex)
        {
            throw new CostProfileException($"Cost profile {origin} is not valid: {DescribeJsonError(ex)}", ex);
        }

        if (doc is null)
        {
            throw new CostProfileException($"Cost profile {origin} is empty (JSON null).");
        }

        if (string.IsNullOrWhiteSpace(doc.Name))
        {
            throw new CostProfileException($"Cost profile {origin} has no 'name'.");
        }

        IommuMode mode = doc.DefaultMode?.ToUpperInvariant() switch
        {
            "STRICT" => IommuMode.Strict,
            "LAZY" => IommuMode.Lazy,
            null => throw new CostProfileException($"Cost profile {origin} has no 'defaultMode' (strict or lazy)."),
            _ => throw new CostProfileException($"Cost profile {origin}: 'defaultMode' is '{doc.DefaultMode}'; valid values: strict, lazy."),
        };

        if (doc.Parameters is null)
        {
            throw new CostProfileException($"Cost profile {origin} has no 'parameters'.");
        }

        var values = new long[s_parameters.Length];
        var sources = new string[s_parameters.Length];
        var seen = new bool[s_parameters.Length];
        foreach ((string key, ProfileParameter? entry) in doc.Parameters)
        {
            int index = IndexOf(key);
            if (index < 0)
            {
                throw new CostProfileException(
                    $"Cost profile {origin}: unknown parameter '{key}'. Valid parameters: {string.Join(", ", ParameterNames)}.", key);
            }

            ParameterInfo info = s_parameters[index];
            if (entry is null)
            {
                throw new CostProfileException($"Cost profile {origin}: parameter '{key}' is null; give {{\"value\":…,\"source\":…}}.", key);
            }

            values[index] = ReadValue(origin, info, entry.Value);
            if (string.IsNullOrWhiteSpace(entry.Source))
            {
                throw new CostProfileException($"Cost profile {origin}: parameter '{key}' has no 'source'; say where the value comes from, or \"estimate\".", key);
            }

            sources[index] = entry.Source;
            seen[index] = true;
        }

        int missing = Array.IndexOf(seen, false);
        if (missing >= 0)
        {
            throw new CostProfileException($"Cost profile {origin} is missing parameter '{s_parameters[missing].Name}'.", s_parameters[missing].Name);
        }

        return new CostProfile(doc.Name, doc.Description ?? string.Empty, mode, values, sources);
    }

    /// <summary>Returns a copy with one numeric parameter changed.</summary>
    /// <param name="parameterName">The parameter's JSON name, e.g. <c>pteWriteNs</c>.</param>
    /// <param name="value">The new value.</param>
    /// <param name="source">The new value's source; "override" when not given.</param>
    /// <exception cref="CostProfileException">The name is unknown, the parameter is a flag, or the value is out of range.</exception>
    public CostProfile With(string parameterName, long value, string? source = null)
    {
        int index = RequireIndex(parameterName);
        ParameterInfo info = s_parameters[index];
        if (info.IsFlag)
        {
            throw new CostProfileException($"Parameter '{parameterName}' is a flag; give true or false.", parameterName);
        }

        CheckRange("override", info, value);
        return WithValue(index, value, source);
    }

    /// <summary>Returns a copy with one flag parameter changed.</summary>
    /// <exception cref="CostProfileException">The name is unknown or the parameter is not a flag.</exception>
    public CostProfile WithFlag(string parameterName, bool value, string? source = null)
    {
        int index = RequireIndex(parameterName);
        if (!s_parameters[index].IsFlag)
        {
            throw new CostProfileException($"Parameter '{parameterName}' is a number, not a flag.", parameterName);
        }

        return WithValue(index, value ? 1 : 0, source);
    }

    /// <summary>Returns a copy with another name, description or default mode.</summary>
    public CostProfile WithIdentity(string? name = null, string? description = null, IommuMode? defaultMode = null) =>
        new(name ?? Name, description ?? Description, defaultMode ?? DefaultMode, _values, _sources);

    /// <summary>The source recorded for a parameter.</summary>
    /// <exception cref="CostProfileException">The name is unknown.</exception>
    public string GetSource(string parameterName) => _sources[RequireIndex(parameterName)];

    /// <summary>The profile as a JSON document in the shape <see cref="Parse"/> reads.</summary>
    public string ToJson()
    {
        using var stream = new MemoryStream();
        using (var writer = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            writer.WriteStartObject();
            writer.WriteString("name", Name);
            writer.WriteString("description", Description);
            writer.WriteString("defaultMode", DefaultMode == IommuMode.Strict ? "strict" : "lazy");
            writer.WriteStartObject("parameters");
            for (int i = 0; i < s_parameters.Length; i++)
            {
                writer.WriteStartObject(s_parameters[i].Name);
                if (s_parameters[i].IsFlag)
                {
                    writer.WriteBoolean("value", _values[i] != 0);
                }
                else
                {
                    writer.WriteNumber("value", _values[i]);
                }

                writer.WriteString("source", _sources[i]);
                writer.WriteEndObject();
            }

            writer.WriteEndObject();
            writer.WriteEndObject();
        }

        return Encoding.UTF8.GetString(stream.ToArray());
    }

    /// <inheritdoc/>
    public override string ToString() => Name;

    private CostProfile WithValue(int index, long value, string? source)
    {
        long[] values = (long[])_values.Clone();
        string[] sources = (string[])_sources.Clone();
        values[index] = value;
        sources[index] = source ?? "override";
        return new CostProfile(Name, Description, DefaultMode, values, sources);
    }

    private static int IndexOf(string name)
    {
        for (int i = 0; i < s_parameters.Length; i++)
        {
            if (s_parameters[i].Name == name)
            {
                return i;
            }
        }

        return -1;
    }

    private static int RequireIndex(string parameterName)
    {
        ArgumentNullException.ThrowIfNull(parameterName);
        int index = IndexOf(parameterName);
        return index >= 0
            ? index
            : throw new CostProfileException(
                $"Unknown cost parameter '{parameterName}'. Valid parameters: {string.Join(", ", ParameterNames)}.", parameterName);
    }

    private static long ReadValue(string origin, ParameterInfo info, JsonElement value)
    {
        if (info.IsFlag)
        {
            return value.ValueKind switch
            {
                JsonValueKind.True => 1,
                JsonValueKind.False => 0,
                JsonValueKind.Undefined => throw new CostProfileException($"Cost profile {origin}: parameter '{info.Name}' has no 'value'.", info.Name),
                _ => throw new CostProfileException($"Cost profile {origin}: parameter '{info.Name}' must be true or false.", info.Name),
            };
        }

        if (value.ValueKind == JsonValueKind.Undefined)
        {
            throw new CostProfileException($"Cost profile {origin}: parameter '{info.Name}' has no 'value'.", info.Name);
        }

        if (value.ValueKind == JsonValueKind.Number && !value.TryGetInt64(out _) && value.TryGetDouble(out double big) && big == Math.Floor(big) && big > info.Maximum)
        {
            throw new CostProfileException(
                $"Cost profile {origin}: parameter '{info.Name}' is {value.GetRawText()}; the largest accepted is {info.Maximum.ToString(CultureInfo.InvariantCulture)}.",
                info.Name);
        }

        if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt64(out long result))
        {
            throw new CostProfileException($"Cost profile {origin}: parameter '{info.Name}' must be a whole number, not {value.GetRawText()}.", info.Name);
        }

        CheckRange(origin, info, result);
        return result;
    }

    private static void CheckRange(string origin, ParameterInfo info, long value)
    {
        if (value < 0)
        {
            throw new CostProfileException($"Cost profile {origin}: parameter '{info.Name}' is negative ({value}).", info.Name);
        }

        if (value < info.Minimum)
        {
            throw new CostProfileException($"Cost profile {origin}: parameter '{info.Name}' must be at least {info.Minimum}, not {value}.", info.Name);
        }

        if (value > info.Maximum)
        {
            string unit = info.Name.EndsWith("Ns", StringComparison.Ordinal) ? " ns (one second per operation)" : "";
            throw new CostProfileException(
                $"Cost profile {origin}: parameter '{info.Name}' is {value.ToString(CultureInfo.InvariantCulture)}; the largest accepted is {info.Maximum.ToString(CultureInfo.InvariantCulture)}{unit}.",
                info.Name);
        }
    }

    /// <summary>Where and what a JSON error is, in our words: line, column, path and the problem, without the serializer's type names.</summary>
    internal static string DescribeJsonError(JsonException ex)
    {
        CultureInfo c = CultureInfo.InvariantCulture;
        string where = ex.LineNumber is long line
            ? $"line {(line + 1).ToString(c)}, column {((ex.BytePositionInLine ?? 0) + 1).ToString(c)}"
            : "somewhere";
        string path = string.IsNullOrEmpty(ex.Path) ? "" : $" ({ex.Path})";
        string message = ex.Message;
        if (message.Contains("could not be converted to", StringComparison.Ordinal))
        {
            string expected = message.Contains("System.String", StringComparison.Ordinal) ? "a string"
                : message.Contains("System.Collections.Generic.Dictionary", StringComparison.Ordinal) ? "an object"
                : "a value of another type";
            return $"at {where}{path} expected {expected}.";
        }

        int cut = message.IndexOf(" Path:", StringComparison.Ordinal);
        if (cut < 0)
        {
            cut = message.IndexOf(" LineNumber:", StringComparison.Ordinal);
        }

        string problem = (cut >= 0 ? message[..cut] : message).Trim();
        return $"at {where}{path}: {problem}";
    }

    private static string ReadResource(string name)
    {
        Assembly assembly = typeof(CostProfile).Assembly;
        string resource = $"DmaBuf.Simulation.Profiles.{name}.json";
        using Stream stream = assembly.GetManifestResourceStream(resource)
            ?? throw new CostProfileException($"Built-in profile '{name}' is missing its resource '{resource}'.");
        using var reader = new StreamReader(stream, Encoding.UTF8);
        return reader.ReadToEnd();
    }

    private readonly record struct ParameterInfo(string Name, bool IsFlag, long Minimum, long Maximum);
}

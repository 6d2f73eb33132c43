using System.Collections.Frozen;
using System.Reflection;
using System.Text;
using System.Text.Json;

namespace DmaBuf.Simulation;

/// <summary>
/// A scenario as data: the SoC's devices and IOMMUs (units, groups, a cost profile each), the pipeline (who produces,
/// who consumes, at what frame rate, how long each consumer holds a frame), the pool and the frames. Read from a JSON
/// file (format: docs/scenario-files.md, schema: scenarios/scenario.schema.json); the built-in scenarios are such
/// files, shipped in the assembly.
/// </summary>
public sealed class Scenario
{
    private const double MaxFrameRate = 10_000;
    private const double MaxHoldMs = 10_000;

    private static readonly FrozenDictionary<string, DeviceKind> s_roles = new Dictionary<string, DeviceKind>
    {
        ["decoder"] = DeviceKind.Decoder,
        ["display"] = DeviceKind.Display,
        ["gpu"] = DeviceKind.Gpu,
        ["isp"] = DeviceKind.Isp,
        ["encoder"] = DeviceKind.Encoder,
        ["npu"] = DeviceKind.Npu,
    }.ToFrozenDictionary(StringComparer.Ordinal);

    private static readonly FrozenDictionary<string, DmaAccess> s_access = new Dictionary<string, DmaAccess>
    {
        ["read"] = DmaAccess.Read,
        ["write"] = DmaAccess.Write,
        ["read-write"] = DmaAccess.ReadWrite,
    }.ToFrozenDictionary(StringComparer.Ordinal);

    private static readonly FrozenDictionary<string, DescriptorChainFormat> s_chainFormats = new Dictionary<string, DescriptorChainFormat>
    {
        [DescriptorChainFormat.VcodecDma.Name] = DescriptorChainFormat.VcodecDma,
    }.ToFrozenDictionary(StringComparer.Ordinal);

    private static readonly FrozenDictionary<string, FrameFormat> s_formats = new Dictionary<string, FrameFormat>
    {
        ["nv12"] = FrameFormat.Nv12,
        ["yuyv"] = FrameFormat.Yuyv,
        ["rgba"] = FrameFormat.Rgba,
    }.ToFrozenDictionary(StringComparer.Ordinal);

    private static readonly FrozenDictionary<string, IommuMode> s_modes = new Dictionary<string, IommuMode>
    {
        ["strict"] = IommuMode.Strict,
        ["lazy"] = IommuMode.Lazy,
        ["linux-lazy"] = IommuMode.LinuxLazy,
    }.ToFrozenDictionary(StringComparer.Ordinal);

    private static readonly Dictionary<string, Scenario> s_builtIn = new(StringComparer.Ordinal);
    private static readonly Lock s_builtInLock = new();

    private Scenario(string name, string description, string origin, SocLayout layout, string producer,
        IReadOnlyList<ConsumerPlan> consumers, ScenarioOptions defaults, ChurnPlan? churn)
    {
        Name = name;
        Description = description;
        Origin = origin;
        Layout = layout;
        Producer = producer;
        ConsumerPlans = consumers;
        Defaults = defaults;
        Churn = churn;
    }

    /// <summary>Names of the built-in scenarios: <c>playback</c>, <c>camera</c>, <c>churn</c>.</summary>
    public static IReadOnlyList<string> BuiltInNames => Scenarios.Names;

    /// <summary>The scenario's name.</summary>
    public string Name { get; }

    /// <summary>What the scenario models.</summary>
    public string Description { get; }

    /// <summary>Where it was read from: a file path, or <c>built-in</c> and the name.</summary>
    public string Origin { get; }

    /// <summary>The device that writes every frame.</summary>
    public string Producer { get; }

    /// <summary>The devices that read every frame, in order.</summary>
    public IReadOnlyList<string> Consumers => [.. ConsumerPlans.Select(c => c.Device)];

    /// <summary>Every device of the SoC.</summary>
    public IReadOnlyList<string> Devices => [.. Layout.Devices.Select(d => d.Name)];

    /// <summary>The cost profiles its IOMMUs use, each named once.</summary>
    public IReadOnlyList<string> ProfileNames => [.. Layout.Iommus.Select(u => u.Profile.Name).Distinct(StringComparer.Ordinal)];

    /// <summary>Whether the pool is freed and reallocated at another resolution during the run.</summary>
    public bool Churns => Churn is not null;

    internal SocLayout Layout { get; }

    /// <summary>
    /// An estimate of the host memory, in bytes, one strategy's run of this scenario with <paramref name="options"/>
    /// needs at its peak: the frames' bytes (each pool buffer is written, so its simulated pages hold real memory), the
    /// same again for what the garbage collector has not yet returned and the CPU cache's copies, page tables and
    /// scatter lists per importer, and a fixed base for the runtime and the SoC.
    /// </summary>
    /// <remarks>
    /// Calibrated against the peak resident set of <c>dmabuf simulate playback</c> at pool 64 and 256 (693 MB and
    /// 1.81 GB; the estimate gives 654 MB and 1.85 GB). A caller compares it with the memory the machine has before it
    /// starts a run that cannot fit.
    /// </remarks>
    public long EstimateHostBytes(ScenarioOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        long frame = options.Resolution.BytesIn(options.Format);
        if (Churn is { } churn)
        {
            frame = Math.Max(frame, churn.Alternate.BytesIn(options.Format));
        }

        long pages = (frame + PhysicalMemory.PageSize - 1) / PhysicalMemory.PageSize;
        long importers = Math.Max(1, options.Consumers ?? ConsumerPlans.Count);
        const long bytesPerMappedPage = 64; // a page-table leaf, its scatter entry and the IOTLB's share
        const long baseBytes = 256L << 20;
        return checked(baseBytes + (options.Pool * ((2 * pages * PhysicalMemory.PageSize) + (importers * pages * bytesPerMappedPage))));
    }

    internal IReadOnlyList<ConsumerPlan> ConsumerPlans { get; }

    internal ScenarioOptions Defaults { get; }

    internal ChurnPlan? Churn { get; }

    /// <summary>
    /// A built-in scenario by name (<see cref="BuiltInNames"/>), or the scenario file at <paramref name="nameOrPath"/>.
    /// </summary>
    /// <exception cref="ScenarioFileException">
    /// The name is neither built in nor an existing file (the message lists the built-in names), or the file is not a
    /// valid scenario (the message names the file, line, JSON path and valid choices).
    /// </exception>
    public static Scenario Load(string nameOrPath)
    {
        ArgumentNullException.ThrowIfNull(nameOrPath);
        if (BuiltInNames.Contains(nameOrPath))
        {
            return BuiltIn(nameOrPath);
        }

        if (Directory.Exists(nameOrPath))
        {
            throw new ScenarioFileException($"Scenario file '{nameOrPath}' is a directory; give a .json file or one of: {string.Join(", ", BuiltInNames)}.");
        }

        if (!File.Exists(nameOrPath))
        {
            throw new ScenarioFileException(
                $"Scenario file '{nameOrPath}' does not exist. Built-in scenarios: {string.Join(", ", BuiltInNames)}.");
        }

        string text;
        try
        {
            text = File.ReadAllText(nameOrPath);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ScenarioFileException($"Scenario file '{nameOrPath}' cannot be read: {e.Message}", e);
        }

        return Parse(text, nameOrPath, Path.GetDirectoryName(Path.GetFullPath(nameOrPath)));
    }

    /// <summary>Parses a scenario from JSON text.</summary>
    /// <param name="json">The scenario document.</param>
    /// <param name="origin">Where the text came from, for error messages.</param>
    /// <param name="baseDirectory">Where relative profile paths are resolved; the current directory when null.</param>
    /// <exception cref="ScenarioFileException">The text is not a valid scenario; the message names the line, the JSON path and the valid choices.</exception>
    public static Scenario Parse(string json, string origin, string? baseDirectory)
    {
        ArgumentNullException.ThrowIfNull(json);
        ArgumentNullException.ThrowIfNull(origin);
        JsonSource source = JsonSource.Parse(json, origin);
        using JsonDocument document = source.Document;
        var root = new JsonObjectReader(source, document.RootElement, "$",
            "name", "description", "frames", "pool", "resolution", "format", "frameRate", "devices", "iommus", "pipeline", "churn");

        var devices = new List<DeviceLayout>();
        var devicePaths = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach ((JsonElement element, string path) in root.Elements("devices", required: true))
        {
            var d = new JsonObjectReader(source, element, path, "name", "role", "dma", "bandwidth", "coherent", "chainFormat");
            string name = d.String("name");
            if (!devicePaths.TryAdd(name, path))
            {
                throw d.Error("name", $"device '{name}' is already defined at {devicePaths[name]}; device names must be unique.");
            }

            devices.Add(new DeviceLayout(
                name,
                d.Choice("role", s_roles),
                d.Choice("dma", s_access),
                d.Integer("bandwidth", 1_000_000, 1_000_000_000_000),
                d.Flag("coherent", false),
                d.Has("chainFormat") ? d.Choice("chainFormat", s_chainFormats) : null));
        }

        if (devices.Count == 0)
        {
            throw source.Error("$.devices", "must list at least one device.");
        }

        var iommus = new List<IommuLayout>();
        var unitNames = new HashSet<string>(StringComparer.Ordinal);
        var groupOf = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach ((JsonElement element, string path) in root.Elements("iommus", required: false))
        {
            var u = new JsonObjectReader(source, element, path, "name", "profile", "mode", "groups");
            string name = u.String("name");
            if (!unitNames.Add(name))
            {
                throw u.Error("name", $"IOMMU '{name}' is defined twice; IOMMU names must be unique.");
            }

            CostProfile profile = LoadProfile(u, baseDirectory);
            IommuMode? mode = u.Has("mode") ? u.Choice("mode", s_modes) : null;
            var groups = new List<GroupLayout>();
            foreach ((JsonElement ge, string gpath) in u.Elements("groups", required: true))
            {
                var g = new JsonObjectReader(source, ge, gpath, "name", "devices");
                string group = g.String("name");
                var members = new List<string>();
                foreach ((JsonElement de, string dpath) in g.Elements("devices", required: true))
                {
                    string device = de.ValueKind == JsonValueKind.String ? de.GetString()! : throw source.Error(dpath, $"must be a device name, not {JsonObjectReader.Describe(de)}.");
                    if (!devicePaths.ContainsKey(device))
                    {
                        throw source.Error(dpath, $"'{device}' is not a device; devices: {string.Join(", ", devicePaths.Keys)}.");
                    }

                    if (!groupOf.TryAdd(device, $"{name}/{group}"))
                    {
                        throw source.Error(dpath, $"device '{device}' is already in IOMMU group {groupOf[device]}; a device sits in one group.");
                    }

                    members.Add(device);
                }

                if (members.Count == 0)
                {
                    throw g.Error("devices", "must list at least one device.");
                }

                groups.Add(new GroupLayout(group, members));
            }

            if (groups.Count == 0)
            {
                throw u.Error("groups", "must list at least one group.");
            }

            iommus.Add(new IommuLayout(name, profile, mode, groups));
        }

        JsonObjectReader pipeline = root.Object("pipeline", "producer", "consumers");
        string producer = pipeline.String("producer");
        DeviceLayout producerDevice = devices.FirstOrDefault(d => d.Name == producer)
            ?? throw pipeline.Error("producer", $"'{producer}' is not a device; devices: {string.Join(", ", devicePaths.Keys)}.");
        if (producerDevice.Access == DmaAccess.Read)
        {
            throw pipeline.Error("producer", $"'{producer}' has dma 'read' and cannot write frames; give it 'write' or 'read-write'.");
        }

        var consumers = new List<ConsumerPlan>();
        foreach ((JsonElement element, string path) in pipeline.Elements("consumers", required: true))
        {
            var c = new JsonObjectReader(source, element, path, "device", "holdMs");
            string device = c.String("device");
            DeviceLayout d = devices.FirstOrDefault(x => x.Name == device)
                ?? throw c.Error("device", $"'{device}' is not a device; devices: {string.Join(", ", devicePaths.Keys)}.");
            if (device == producer)
            {
                throw c.Error("device", $"'{device}' is the producer; a consumer is another device.");
            }

            if (consumers.Any(x => x.Device == device))
            {
                throw c.Error("device", $"'{device}' is already a consumer.");
            }

            if (d.Access == DmaAccess.Write)
            {
                throw c.Error("device", $"'{device}' has dma 'write' and cannot read frames; give it 'read' or 'read-write'.");
            }

            consumers.Add(new ConsumerPlan(device, (long)(c.Number("holdMs", 0, MaxHoldMs, 0) * 1_000_000)));
        }

        if (consumers.Count == 0)
        {
            throw pipeline.Error("consumers", "must list at least one consumer.");
        }

        double frameRate = root.Number("frameRate", 0, MaxFrameRate, 60);
        var defaults = new ScenarioOptions
        {
            Frames = (int)root.Integer("frames", 1, ScenarioOptions.MaxFrames, 600),
            Pool = (int)root.Integer("pool", 1, ScenarioOptions.MaxPool, 20),
            Resolution = ParseResolution(root, "resolution", "1080p"),
            Format = root.Choice("format", s_formats, "nv12"),
            FrameIntervalNs = frameRate == 0 ? 0 : (long)Math.Round(1e9 / frameRate),
        };

        ChurnPlan? churn = null;
        if (root.Has("churn"))
        {
            JsonObjectReader c = root.Object("churn", "phases", "alternate");
            churn = new ChurnPlan((int)c.Integer("phases", 2, 1000, 5), ParseResolution(c, "alternate", "1280x720"));
        }

        return new Scenario(root.String("name"), root.String("description", ""), origin, new SocLayout(devices, iommus),
            producer, consumers, defaults, churn);
    }

    /// <summary>
    /// The invalidation mode of the scenario's first IOMMU under <paramref name="options"/>: the option's, else the
    /// IOMMU's own, else its profile's default (strict when the SoC has no IOMMU).
    /// </summary>
    public IommuMode EffectiveMode(ScenarioOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return options.Mode
            ?? (Layout.Iommus.Count > 0 ? Layout.Iommus[0].Mode ?? (options.Profile ?? Layout.Iommus[0].Profile).DefaultMode : (IommuMode?)null)
            ?? IommuMode.Strict;
    }

    /// <summary>The settings the file gives (frames, pool, resolution, format, frame rate); every other setting is the default.</summary>
    public ScenarioOptions DefaultOptions() => Defaults.Copy();

    /// <summary>Runs the scenario under <paramref name="strategy"/> with <paramref name="options"/> (start from <see cref="DefaultOptions"/>).</summary>
    /// <param name="strategy">Strategy name (<see cref="MappingStrategy.Names"/>).</param>
    /// <param name="options">Settings.</param>
    /// <param name="progress">Receives the number of frames done.</param>
    /// <exception cref="ArgumentException">Unknown strategy, or a setting out of range.</exception>
    public StrategyResult Run(string strategy, ScenarioOptions options, IProgress<int>? progress = null) =>
        FrameScenarioRunner.Run(this, strategy, options, progress);

    internal static Scenario BuiltIn(string name)
    {
        lock (s_builtInLock)
        {
            if (!s_builtIn.TryGetValue(name, out Scenario? scenario))
            {
                Assembly assembly = typeof(Scenario).Assembly;
                string resource = $"DmaBuf.Simulation.Scenarios.{name}.json";
                using Stream stream = assembly.GetManifestResourceStream(resource)
                    ?? throw new ScenarioFileException($"Built-in scenario '{name}' is missing its resource '{resource}'.");
                using var reader = new StreamReader(stream, Encoding.UTF8);
                scenario = Parse(reader.ReadToEnd(), $"built-in scenario '{name}'", null);
                s_builtIn.Add(name, scenario);
            }

            return scenario;
        }
    }

    private static CostProfile LoadProfile(JsonObjectReader unit, string? baseDirectory)
    {
        string name = unit.String("profile", "smmuv3-strict");
        bool isPath = name.Contains('/', StringComparison.Ordinal) || name.EndsWith(".json", StringComparison.OrdinalIgnoreCase);
        string nameOrPath = !isPath || Path.IsPathRooted(name) || baseDirectory is null ? name : Path.Combine(baseDirectory, name);
        try
        {
            return CostProfile.Load(nameOrPath);
        }
        catch (CostProfileException e)
        {
            throw unit.Error("profile", e.Message);
        }
    }

    private static Resolution ParseResolution(JsonObjectReader o, string name, string fallback)
    {
        string text = o.String(name, fallback);
        try
        {
            return Resolution.Parse(text);
        }
        catch (FormatException e)
        {
            throw o.Error(name, e.Message);
        }
    }
}

/// <summary>A consumer of a scenario's frames and how long it holds each one after reading it.</summary>
internal sealed record ConsumerPlan(string Device, long HoldNs);

/// <summary>Pool churn: the run is cut into <paramref name="Phases"/> and each phase reallocates the pool at the other resolution.</summary>
internal sealed record ChurnPlan(int Phases, Resolution Alternate);

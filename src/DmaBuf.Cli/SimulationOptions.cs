using System.CommandLine;
using System.CommandLine.Parsing;
using DmaBuf.Simulation;

namespace DmaBuf.Cli;

/// <summary>
/// The options <c>simulate</c> and <c>sweep</c> share: which scenario (a built-in name or <c>--scenario-file</c>) and the
/// settings that override the scenario's own. An option left out keeps the scenario file's value.
/// </summary>
internal sealed class SimulationOptions
{
    private readonly Argument<string?> _scenario = new("scenario")
    {
        Description = $"Built-in scenario: {string.Join(", ", Scenarios.Names)} (or give --scenario-file).",
        Arity = ArgumentArity.ZeroOrOne,
    };

    private readonly Option<string?> _scenarioFile = new("--scenario-file")
    {
        Description = "A scenario JSON file (docs/scenario-files.md); its settings are the defaults the other options override.",
    };

    private readonly Option<string[]> _strategy = new("--strategy")
    {
        Description = $"Strategy to run; several may follow one --strategy. All when omitted: {string.Join(", ", MappingStrategy.Names)}.",
        Arity = ArgumentArity.OneOrMore,
        AllowMultipleArgumentsPerToken = true,
    };

    private readonly Option<int?> _frames = new("--frames")
    {
        Description = "Frames to produce (default: the scenario's; 600 for the built-ins).",
        CustomParser = r => SimulateCommand.ParseCount(r, "--frames", 1, ScenarioOptions.MaxFrames),
    };

    private readonly Option<int?> _pool = new("--pool")
    {
        Description = "Buffers in the frame pool (default: the scenario's; 20 for the built-ins).",
        CustomParser = r => SimulateCommand.ParseCount(r, "--pool", 1, ScenarioOptions.MaxPool),
    };

    private readonly Option<int?> _consumers = new("--consumers")
    {
        Description = "How many of the scenario's consumers read each frame, the first ones in order (default: all).",
        CustomParser = r => SimulateCommand.ParseCount(r, "--consumers", 1, 64),
    };

    private readonly Option<Resolution?> _resolution = new("--resolution")
    {
        Description = "Frame size: 1080p, 4k or WxH (default: the scenario's).",
        CustomParser = r =>
        {
            try
            {
                return Resolution.Parse(r.Tokens[0].Value);
            }
            catch (FormatException e)
            {
                r.AddError(e.Message);
                return null;
            }
        },
    };

    private readonly Option<string> _topology = new("--topology")
    {
        Description = "separate: the scenario's IOMMU units and groups; shared: one IOMMU domain for every device behind an IOMMU.",
        DefaultValueFactory = _ => "separate",
    };

    private readonly Option<string?> _iommu = new("--iommu")
    {
        Description = "IOMMU invalidation: strict, lazy (memory held until the flush), or linux-lazy (memory freed at unmap, as Linux). Default: each IOMMU's own.",
    };

    private readonly Option<string?> _profile = new("--profile")
    {
        Description = $"Cost profile of every IOMMU: {string.Join(", ", CostProfile.BuiltInNames)}, or a JSON file (default: each IOMMU's own).",
    };

    private readonly Option<int> _seed = new("--seed")
    {
        Description = "Seed of frame content and physical placement.",
        DefaultValueFactory = _ => 1,
        CustomParser = r => SimulateCommand.ParseCount(r, "--seed", int.MinValue, int.MaxValue),
    };

    private readonly Option<long?> _budget = new("--cache-budget")
    {
        Description = "Byte budget of the mapping caches, e.g. 64M or 1G: per importer (exporter-cache), per address space (domain-share). Unbounded by default.",
        CustomParser = r => ParseBudget(r),
    };

    private readonly Option<long?> _maxMemory = new("--max-memory")
    {
        Description = "Refuse a run whose estimated memory is above this size, e.g. 4G (default: half of what the machine has available).",
        CustomParser = r => ParseSize(r, "--max-memory"),
    };

    private readonly Option<bool> _noSync = new("--no-sync") { Description = "Both --no-fences and --no-cache-sync." };

    private readonly Option<bool> _noFences = new("--no-fences")
    {
        Description = "Turn off implicit synchronization through fences: readers start before the write lands (stale reads from overtaking).",
    };

    private readonly Option<bool> _noCacheSync = new("--no-cache-sync")
    {
        Description = "Turn off CPU cache maintenance around CPU access: the CPU's stamp stays in its cache (stale reads from cache lines).",
    };

    private readonly Option<bool> _rogue = new("--rogue-device")
    {
        Description = "Make the first consumer keep reading and writing its old device addresses after each unmap, and report what it reaches.",
    };

    public SimulationOptions()
    {
        _strategy.AcceptOnlyFromAmong([.. MappingStrategy.Names]);
        _topology.AcceptOnlyFromAmong("separate", "shared");
        _iommu.AcceptOnlyFromAmong("strict", "lazy", "linux-lazy");
    }

    public Argument<string?> ScenarioArgument => _scenario;

    public IEnumerable<Option> All =>
        [_scenarioFile, _strategy, _frames, _pool, _consumers, _resolution, _topology, _iommu, _profile, _seed, _budget, _noSync, _noFences, _noCacheSync, _rogue, _maxMemory];

    public string[] Strategies(ParseResult parse) =>
        parse.GetValue(_strategy) is { Length: > 0 } s ? [.. s.Distinct()] : [.. MappingStrategy.Names];

    /// <summary>The scenario and the settings of the run, or a usage error (the message says what was wrong).</summary>
    public (Scenario Scenario, ScenarioOptions Options) Resolve(ParseResult parse)
    {
        string? name = parse.GetValue(_scenario);
        string? file = parse.GetValue(_scenarioFile);
        Scenario scenario;
        try
        {
            scenario = (name, file) switch
            {
                (null, null) => throw new UsageException($"Give a scenario ({string.Join(", ", Scenarios.Names)}) or --scenario-file FILE."),
                (not null, not null) => throw new UsageException($"Give either the scenario '{name}' or --scenario-file, not both."),
                (not null, null) when !Scenarios.Names.Contains(name) =>
                    throw new UsageException($"Unknown scenario '{name}'. Valid: {string.Join(", ", Scenarios.Names)}; or give --scenario-file FILE."),
                (not null, null) => Scenario.Load(name),
                _ => Scenario.Load(file!),
            };
        }
        catch (ScenarioFileException e)
        {
            throw new UsageException(e.Message);
        }

        CostProfile? profile = null;
        if (parse.GetValue(_profile) is { } p)
        {
            try
            {
                profile = CostProfile.Load(p);
            }
            catch (CostProfileException e)
            {
                throw new UsageException(e.Message);
            }
        }

        ScenarioOptions d = scenario.DefaultOptions();
        bool noSync = parse.GetValue(_noSync);
        var options = new ScenarioOptions
        {
            Frames = parse.GetValue(_frames) ?? d.Frames,
            Pool = parse.GetValue(_pool) ?? d.Pool,
            Resolution = parse.GetValue(_resolution) ?? d.Resolution,
            Format = d.Format,
            FrameIntervalNs = d.FrameIntervalNs,
            Consumers = parse.GetValue(_consumers),
            Topology = parse.GetValue(_topology) == "shared" ? Topology.Shared : Topology.Separate,
            Mode = ParseMode(parse.GetValue(_iommu)),
            Profile = profile,
            Seed = parse.GetValue(_seed),
            CacheBudgetBytes = parse.GetValue(_budget),
            Fences = !(noSync || parse.GetValue(_noFences)),
            CacheSync = !(noSync || parse.GetValue(_noCacheSync)),
            RogueDevice = parse.GetValue(_rogue),
        };
        if (options.Consumers > scenario.Consumers.Count)
        {
            throw new UsageException(
                $"--consumers must be between 1 and {scenario.Consumers.Count} for {scenario.Name} (its consumers: {string.Join(", ", scenario.Consumers)}); got {options.Consumers}.");
        }

        CheckFits(scenario, options, MemoryLimit(parse));
        return (scenario, options);
    }

    /// <summary>The memory a run may use: <c>--max-memory</c>, or half of what the machine has available.</summary>
    public (long Bytes, string Why) MemoryLimit(ParseResult parse)
    {
        if (parse.GetValue(_maxMemory) is { } limit)
        {
            return (limit, $"the --max-memory limit is {ByteSize.Format(limit)}");
        }

        long available = HostMemory.AvailableBytes();
        return (available / 2, $"the limit is half of the {ByteSize.Format(available)} this machine has available; --max-memory raises it");
    }

    /// <summary>Refuses, before anything is allocated, a run whose estimated memory exceeds the limit.</summary>
    /// <exception cref="MachineLimitException">The estimate and the limit, and what to lower.</exception>
    public static void CheckFits(Scenario scenario, ScenarioOptions options, (long Bytes, string Why) limit)
    {
        long need = scenario.EstimateHostBytes(options);
        if (need > limit.Bytes)
        {
            throw new MachineLimitException(
                $"This run needs about {ByteSize.Format(need)} of memory ({options.Pool} buffers of {options.Resolution} {options.Format.ToString().ToUpperInvariant()}); " +
                $"{limit.Why}. Lower --pool or --resolution.");
        }
    }

    public static IommuMode? ParseMode(string? mode) => mode switch
    {
        "strict" => IommuMode.Strict,
        "lazy" => IommuMode.Lazy,
        "linux-lazy" => IommuMode.LinuxLazy,
        _ => null,
    };

    public static string ModeName(IommuMode mode) => mode switch
    {
        IommuMode.Strict => "strict",
        IommuMode.Lazy => "lazy",
        _ => "linux-lazy",
    };

    /// <summary>The settings a run used, as its JSON document echoes them.</summary>
    public static SimulationSettings Settings(Scenario scenario, ScenarioOptions options)
    {
        string profile = options.Profile?.Name ?? string.Join("+", scenario.ProfileNames);
        IommuMode mode = scenario.EffectiveMode(options);
        return new SimulationSettings(
            scenario.Origin,
            profile,
            ModeName(mode),
            options.Topology == Topology.Shared ? "shared" : "separate",
            options.Resolution.ToString(),
            options.Format.ToString().ToLowerInvariant(),
            options.Frames,
            options.Pool,
            options.Consumers ?? scenario.Consumers.Count,
            options.Seed,
            options.Fences,
            options.CacheSync,
            options.RogueDevice);
    }

    internal static long? ParseBudget(ArgumentResult r) => ParseSize(r, "--cache-budget");

    internal static long? ParseSize(ArgumentResult r, string option)
    {
        string text = r.Tokens[0].Value;
        if (ByteSize.TryParse(text, out long bytes))
        {
            if (bytes > 0)
            {
                return bytes;
            }

            r.AddError($"{option} must be larger than 0 (got '{text}'); give bytes or a number with K, M or G (for example 64M).");
            return null;
        }

        r.AddError($"{option} '{text}' is not a size; give bytes or a number with K, M or G (for example 64M).");
        return null;
    }
}

/// <summary>A request that is valid but cannot fit this machine (exit 3); the message gives the estimate and the limit.</summary>
internal sealed class MachineLimitException(string message) : Exception(message);

/// <summary>A usage error found after parsing (exit 2); the message says what was wrong and the valid choices.</summary>
internal sealed class UsageException(string message) : ArgumentException(message);

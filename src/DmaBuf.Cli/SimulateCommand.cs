using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using DmaBuf.Simulation;
using Spectre.Console;

namespace DmaBuf.Cli;

/// <summary><c>dmabuf simulate &lt;scenario&gt;</c>: runs a scenario under each strategy and compares them.</summary>
internal static class SimulateCommand
{
    public static Command Create(IAnsiConsole console, TextWriter stdout, TextWriter stderr)
    {
        var scenario = new Argument<string>("scenario")
        {
            Description = $"Scenario to run: {string.Join(", ", Scenarios.Names)}.",
        };
        scenario.AcceptOnlyFromAmong([.. Scenarios.Names]);

        var strategy = new Option<string[]>("--strategy")
        {
            Description = $"Strategy to run; repeat for several. All when omitted: {string.Join(", ", MappingStrategy.Names)}.",
            Arity = ArgumentArity.OneOrMore,
        };
        strategy.AcceptOnlyFromAmong([.. MappingStrategy.Names]);

        var frames = new Option<int>("--frames")
        {
            Description = "Frames to produce.",
            DefaultValueFactory = _ => 600,
            CustomParser = r => ParseCount(r, "--frames", 1, 10_000_000),
        };

        var pool = new Option<int>("--pool")
        {
            Description = "Buffers in the frame pool.",
            DefaultValueFactory = _ => 20,
            CustomParser = r => ParseCount(r, "--pool", 1, 4096),
        };

        var resolution = new Option<Resolution>("--resolution")
        {
            Description = "Frame size: 1080p, 4k or WxH.",
            DefaultValueFactory = _ => Resolution.Hd1080,
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

        var topology = new Option<string>("--topology")
        {
            Description = "separate: one IOMMU per device; shared: one IOMMU domain for all devices.",
            DefaultValueFactory = _ => "separate",
        };
        topology.AcceptOnlyFromAmong("separate", "shared");

        var iommu = new Option<string?>("--iommu") { Description = "IOMMU invalidation: strict or lazy (default: the profile's)." };
        iommu.AcceptOnlyFromAmong("strict", "lazy");

        var profile = new Option<string>("--profile")
        {
            Description = $"Cost profile: {string.Join(", ", CostProfile.BuiltInNames)}, or a JSON file.",
            DefaultValueFactory = _ => "smmuv3-strict",
        };

        var seed = new Option<int>("--seed")
        {
            Description = "Seed of frame content and physical placement.",
            DefaultValueFactory = _ => 1,
            CustomParser = r => ParseCount(r, "--seed", int.MinValue, int.MaxValue),
        };
        var json = new Option<bool>("--json") { Description = "Print one JSON document instead of a table." };
        var noSync = new Option<bool>("--no-sync")
        {
            Description = "Turn off implicit synchronization (fences) and CPU cache maintenance, to see what breaks.",
        };
        var chart = new Option<string?>("--chart") { Description = "Also draw mapping time per frame and map calls per strategy to FILE (.png or .svg)." };
        chart.Validators.Add(r =>
        {
            string? file = r.GetValueOrDefault<string?>();
            if (file is not null && Path.GetExtension(file).ToLowerInvariant() is not (".png" or ".svg"))
            {
                r.AddError($"--chart '{file}': the file must end in .png or .svg.");
            }
        });
        var budget = new Option<long?>("--cache-budget")
        {
            Description = "Byte budget of the mapping caches, e.g. 64M or 1G: per importer (exporter-cache), per address space (domain-share). Unbounded by default.",
            CustomParser = r =>
            {
                if (ByteSize.TryParse(r.Tokens[0].Value, out long bytes) && bytes > 0)
                {
                    return bytes;
                }

                r.AddError($"--cache-budget '{r.Tokens[0].Value}' is not a size; use bytes or a number with K, M or G (for example 64M).");
                return null;
            },
        };

        var command = new Command("simulate", "Run a scenario on the simulated SoC under each mapping strategy, side by side.");
        command.Arguments.Add(scenario);
        foreach (Option o in new Option[] { strategy, frames, pool, resolution, topology, iommu, profile, seed, budget, noSync, json, chart })
        {
            command.Options.Add(o);
        }

        command.SetAction(parse =>
        {
            CostProfile costProfile;
            try
            {
                costProfile = CostProfile.Load(parse.GetValue(profile)!);
            }
            catch (CostProfileException e)
            {
                console.MarkupLine($"[red]error:[/] {Markup.Escape(e.Message)}");
                return (int)ExitCode.Usage;
            }

            string? mode = parse.GetValue(iommu);
            var options = new ScenarioOptions
            {
                Frames = parse.GetValue(frames),
                Pool = parse.GetValue(pool),
                Resolution = parse.GetValue(resolution)!,
                Topology = parse.GetValue(topology) == "shared" ? Topology.Shared : Topology.Separate,
                Mode = mode switch { "strict" => IommuMode.Strict, "lazy" => IommuMode.Lazy, _ => null },
                Profile = costProfile,
                Seed = parse.GetValue(seed),
                CacheBudgetBytes = parse.GetValue(budget),
                Sync = !parse.GetValue(noSync),
            };
            string[] strategies = parse.GetValue(strategy) is { Length: > 0 } s ? [.. s.Distinct()] : [.. MappingStrategy.Names];
            return (int)Run(console, stdout, stderr, parse.GetValue(scenario)!, strategies, options, parse.GetValue(json), parse.GetValue(chart));
        });
        return command;
    }

    private static ExitCode Run(IAnsiConsole console, TextWriter stdout, TextWriter stderr, string scenario, string[] strategies, ScenarioOptions options, bool json, string? chartPath)
    {
        var results = new List<StrategyResult>();
        if (json || !console.Profile.Capabilities.Interactive)
        {
            foreach (string name in strategies)
            {
                results.Add(Scenarios.Run(scenario, name, options));
            }
        }
        else
        {
            console.Progress()
                .AutoClear(true)
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
                .Start(ctx =>
                {
                    foreach (string name in strategies)
                    {
                        ProgressTask task = ctx.AddTask(name, maxValue: options.Frames);
                        results.Add(Scenarios.Run(scenario, name, options, new Progress<int>(done => task.Value = done)));
                        task.Value = options.Frames;
                    }
                });
        }

        IommuMode effectiveMode = options.Mode ?? options.Profile.DefaultMode;
        var settings = new SimulationSettings(
            options.Profile.Name,
            effectiveMode == IommuMode.Strict ? "strict" : "lazy",
            options.Topology == Topology.Shared ? "shared" : "separate",
            options.Resolution.ToString(),
            options.Frames,
            options.Pool,
            options.Seed,
            options.Sync);
        if (json)
        {
            stdout.WriteLine(JsonSerializer.Serialize(new SimulationReport(scenario, settings, results), CliJsonContext.Default.SimulationReport));
        }
        else
        {
            WriteTable(console, scenario, settings, results);
        }

        if (chartPath is not null)
        {
            Chart.Save(chartPath, scenario, results);
            if (!json)
            {
                console.MarkupLine($"chart written to [blue]{Markup.Escape(chartPath)}[/]");
            }
        }

        foreach (string warning in results.SelectMany(r => r.Warnings))
        {
            // In JSON mode stdout holds only the document; warnings go to stderr.
            if (json)
            {
                stderr.WriteLine($"warning: {warning}");
            }
            else
            {
                console.MarkupLine($"[yellow]warning:[/] {Markup.Escape(warning)}");
            }
        }

        List<StrategyResult> failed = [.. results.Where(r => !r.Safety.Ok)];
        if (failed.Count > 0)
        {
            foreach (StrategyResult r in failed)
            {
                string line = $"safety check failed for {r.Strategy}: dmaFaults={r.Safety.DmaFaults}, staleReads={r.Safety.StaleReads}, " +
                    $"freedPageAccesses={r.Safety.FreedPageAccesses}, leakedPages={r.Safety.LeakedPages}, staleCacheEntries={r.Safety.StaleCacheEntries}";
                if (json)
                {
                    stderr.WriteLine(line);
                }
                else
                {
                    console.MarkupLine($"[red]{Markup.Escape(line)}[/]");
                }
            }

            return ExitCode.SafetyCheckFailed;
        }

        return ExitCode.Ok;
    }

    private static void WriteTable(IAnsiConsole console, string scenario, SimulationSettings s, List<StrategyResult> results)
    {
        CultureInfo c = CultureInfo.InvariantCulture;
        var table = new Table().Border(TableBorder.Rounded)
            .Title($"{scenario}: {s.Frames} frames, pool {s.Pool}, {s.Resolution} NV12, profile {s.Profile} ({s.Iommu}), topology {s.Topology}");
        table.AddColumn("");
        foreach (StrategyResult r in results)
        {
            table.AddColumn(new TableColumn(r.Strategy).RightAligned());
        }

        double baseline = results.FirstOrDefault(r => r.Strategy == MappingStrategy.Remap)?.Simulated.MappingNsPerFrame
            ?? results[0].Simulated.MappingNsPerFrame;

        void Row(string label, Func<StrategyResult, string> cell) =>
            table.AddRow([label, .. results.Select(cell)]);

        Row("mapping time/frame", r => FormatNs(r.Simulated.MappingNsPerFrame));
        Row("  vs remap", r => r.Simulated.MappingNsPerFrame == 0 ? "-" : (baseline / r.Simulated.MappingNsPerFrame).ToString("0.0", c) + "x less");
        Row("mapping time, total", r => FormatNs(r.Simulated.MappingNs));
        Row("map calls", r => r.Counters.MapCalls.ToString("N0", c));
        Row("unmap calls", r => r.Counters.UnmapCalls.ToString("N0", c));
        Row("PTEs written", r => r.Counters.PagesMapped.ToString("N0", c));
        Row("IOTLB invalidations", r => r.Counters.IotlbInvalidations.ToString("N0", c));
        Row("IOVA allocations", r => r.Counters.IovaAllocs.ToString("N0", c));
        if (results.Any(r => r.Counters.ChainsBuilt > 0))
        {
            Row("chains built", r => r.Counters.ChainsBuilt.ToString("N0", c));
            Row("chain build time", r => FormatNs(r.Simulated.ChainNs));
        }

        if (results.Any(r => r.Counters.CacheEvictions > 0))
        {
            Row("cache evictions", r => r.Counters.CacheEvictions.ToString("N0", c));
        }
        Row("cache hits/misses", r => $"{r.Counters.CacheHits.ToString("N0", c)} / {r.Counters.CacheMisses.ToString("N0", c)}");
        table.AddEmptyRow();
        Row("frames verified", r => Verdict(r.Safety.FramesVerified == r.Frames, r.Safety.FramesVerified.ToString("N0", c)));
        Row("DMA faults", r => Verdict(r.Safety.DmaFaults == 0, r.Safety.DmaFaults.ToString(c)));
        Row("stale reads", r => Verdict(r.Safety.StaleReads == 0, r.Safety.StaleReads.ToString(c)));
        Row("freed-page accesses", r => Verdict(r.Safety.FreedPageAccesses == 0, r.Safety.FreedPageAccesses.ToString(c)));
        Row("leaked pages", r => Verdict(r.Safety.LeakedPages == 0, r.Safety.LeakedPages.ToString(c)));
        if (scenario == Scenarios.Churn)
        {
            Row("mappings left after free", r => Verdict(r.Safety.StaleCacheEntries == 0, r.Safety.StaleCacheEntries.ToString(c)));
        }
        Row("wall time", r => r.WallSeconds.ToString("0.00 s", c));
        console.Write(table);
    }

    internal static int ParseCount(System.CommandLine.Parsing.ArgumentResult r, string name, int min, int max)
    {
        string text = r.Tokens.Count > 0 ? r.Tokens[0].Value : "";
        if (!int.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int value))
        {
            r.AddError($"{name} '{text}' is not a whole number.");
            return 0;
        }

        if (value < min || value > max)
        {
            r.AddError($"{name} must be between {min} and {max} (got {value}).");
            return 0;
        }

        return value;
    }

    private static string Verdict(bool ok, string text) => ok ? $"[green]{text}[/]" : $"[red]{text}[/]";

    private static string FormatNs(double ns)
    {
        CultureInfo c = CultureInfo.InvariantCulture;
        return ns switch
        {
            >= 1e9 => (ns / 1e9).ToString("0.00 s", c),
            >= 1e6 => (ns / 1e6).ToString("0.00 ms", c),
            >= 1e3 => (ns / 1e3).ToString("0.0 µs", c),
            _ => ns.ToString("0 ns", c),
        };
    }
}

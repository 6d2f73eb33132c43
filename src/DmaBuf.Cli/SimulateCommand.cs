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
        var shared = new SimulationOptions();
        var json = new Option<bool>("--json") { Description = "Print one JSON document instead of a table." };
        var chart = new Option<string?>("--chart") { Description = "Also draw mapping time per frame and map calls per strategy to FILE (.png or .svg)." };
        chart.Validators.Add(r => ValidateChartPath(r, r.GetValueOrDefault<string?>()));

        var command = new Command("simulate", "Run a scenario on the simulated SoC under each mapping strategy, side by side.");
        command.Arguments.Add(shared.ScenarioArgument);
        foreach (Option o in shared.All.Append(json).Append(chart))
        {
            command.Options.Add(o);
        }

        command.SetAction(parse =>
        {
            (Scenario scenario, ScenarioOptions options) = shared.Resolve(parse);
            return (int)Run(console, stdout, stderr, scenario, shared.Strategies(parse), options, parse.GetValue(json), parse.GetValue(chart));
        });
        return command;
    }

    /// <summary>
    /// Refuses, before the run, a chart path that is a directory, does not end in .png or .svg, lies in a directory that
    /// does not exist, or cannot be written (a read-only place, <c>/proc</c>, no permission).
    /// </summary>
    internal static void ValidateChartPath(System.CommandLine.Parsing.OptionResult r, string? file)
    {
        if (file is null)
        {
            return;
        }

        if (Directory.Exists(file))
        {
            r.AddError($"--chart '{file}' is a directory; give a file name ending in .png or .svg.");
            return;
        }

        if (Path.GetExtension(file).ToLowerInvariant() is not (".png" or ".svg"))
        {
            r.AddError($"--chart '{file}': the file must end in .png or .svg.");
            return;
        }

        string full = Path.GetFullPath(file);
        string? directory = Path.GetDirectoryName(full);
        if (directory is not null && !Directory.Exists(directory))
        {
            r.AddError($"--chart '{file}': the directory '{directory}' does not exist.");
            return;
        }

        if (CannotWrite(full) is { } reason)
        {
            r.AddError($"--chart '{file}' cannot be written: {reason}.");
        }
    }

    /// <summary>Why <paramref name="path"/> cannot be opened for writing, or null; a file created to find out is removed.</summary>
    internal static string? CannotWrite(string path)
    {
        bool existed = File.Exists(path);
        try
        {
            using (new FileStream(path, FileMode.OpenOrCreate, FileAccess.Write, FileShare.ReadWrite))
            {
            }

            if (!existed)
            {
                File.Delete(path);
            }

            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return "permission denied";
        }
        catch (IOException e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            return "the file system there does not allow creating files";
        }
        catch (IOException e)
        {
            return e.Message.TrimEnd('.');
        }
    }

    /// <summary>Runs every strategy of <paramref name="strategies"/>, with progress bars on a terminal.</summary>
    internal static List<StrategyResult> RunStrategies(IAnsiConsole console, bool quiet, Scenario scenario, string[] strategies, ScenarioOptions options, string? label = null)
    {
        var results = new List<StrategyResult>();
        if (quiet || !console.Profile.Capabilities.Interactive)
        {
            foreach (string name in strategies)
            {
                results.Add(scenario.Run(name, options));
            }

            return results;
        }

        console.Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .Start(ctx =>
            {
                foreach (string name in strategies)
                {
                    ProgressTask task = ctx.AddTask(label is null ? name : $"{label} {name}", maxValue: options.Frames);
                    results.Add(scenario.Run(name, options, new Progress<int>(done => task.Value = done)));
                    task.Value = options.Frames;
                }
            });
        return results;
    }

    private static ExitCode Run(IAnsiConsole console, TextWriter stdout, TextWriter stderr, Scenario scenario, string[] strategies, ScenarioOptions options, bool json, string? chartPath)
    {
        List<StrategyResult> results = RunStrategies(console, json, scenario, strategies, options);
        SimulationSettings settings = SimulationOptions.Settings(scenario, options);
        if (json)
        {
            stdout.WriteLine(JsonSerializer.Serialize(new SimulationReport(scenario.Name, settings, results), CliJsonContext.Default.SimulationReport));
        }
        else
        {
            WriteTable(console, scenario.Name, settings, results);
        }

        if (chartPath is not null)
        {
            Chart.Save(chartPath, scenario.Name, results);
            if (!json)
            {
                console.MarkupLine($"chart written to [blue]{Markup.Escape(chartPath)}[/]");
            }
        }

        return Report(console, stderr, json, results);
    }

    /// <summary>Prints warnings and safety failures (to stderr in JSON mode) and returns the exit code they mean.</summary>
    internal static ExitCode Report(IAnsiConsole console, TextWriter stderr, bool json, IReadOnlyList<StrategyResult> results)
    {
        foreach (string warning in results.SelectMany(r => r.Warnings).Distinct())
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
            .Title($"{scenario}: {s.Frames} frames, pool {s.Pool}, {s.Resolution} {s.Format.ToUpperInvariant()}, profile {s.Profile} ({s.Iommu}), topology {s.Topology}");
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
        if (results.Any(r => r.Safety.StaleCacheEntries > 0) || scenario == Scenarios.Churn)
        {
            Row("mappings left after free", r => Verdict(r.Safety.StaleCacheEntries == 0, r.Safety.StaleCacheEntries.ToString(c)));
        }
        if (results.Any(r => r.Rogue is not null))
        {
            table.AddEmptyRow();
            Row("rogue: accesses after unmap", r => r.Rogue?.Accesses.ToString("N0", c) ?? "-");
            Row("rogue: blocked by the IOMMU", r => r.Rogue?.Blocked.ToString("N0", c) ?? "-");
            Row("rogue: reached memory", r => r.Rogue?.Reached.ToString("N0", c) ?? "-");
            Row("rogue: reached freed pages", r => r.Rogue is null ? "-" : Verdict(r.Rogue.FreedPageAccesses == 0, r.Rogue.FreedPageAccesses.ToString("N0", c)));
            Row("rogue: freed bytes reachable", r => r.Rogue?.BytesReachableAfterFree.ToString("N0", c) ?? "-");
            Row("unmap-to-flush window p50/max", r => r.Rogue is null ? "-" : $"{FormatNs(r.Rogue.WindowP50Ns)} / {FormatNs(r.Rogue.WindowMaxNs)}");
        }

        Row("wall time", r => r.WallSeconds.ToString("0.00 s", c));
        console.Write(table);
    }

    internal static int ParseCount(System.CommandLine.Parsing.ArgumentResult r, string name, int min, int max)
    {
        string text = r.Tokens.Count > 0 ? r.Tokens[0].Value : "";
        CultureInfo c = CultureInfo.InvariantCulture;
        if (!System.Numerics.BigInteger.TryParse(text, NumberStyles.AllowLeadingSign, c, out System.Numerics.BigInteger value))
        {
            r.AddError($"{name} '{text}' is not a whole number; give one from {min.ToString(c)} to {max.ToString(c)}.");
            return 0;
        }

        if (value < min || value > max)
        {
            r.AddError($"{name} must be between {min.ToString(c)} and {max.ToString(c)} (got {value.ToString(c)}).");
            return 0;
        }

        return (int)value;
    }

    private static string Verdict(bool ok, string text) => ok ? $"[green]{text}[/]" : $"[red]{text}[/]";

    internal static string FormatNs(double ns)
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

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
            Chart.Save(chartPath, $"{scenario.Name}: {settings.Frames:N0} frames, pool {settings.Pool}, {settings.Resolution} {settings.Format.ToUpperInvariant()}, " +
                $"{settings.Profile} ({settings.Iommu}), topology {settings.Topology}", results);
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

    /// <summary>
    /// The human-readable result, within 80 columns: the settings, one row per strategy with what it cost against remap
    /// (the baseline, when it ran), the ceiling any per-importer cache can reach, the details, and a verdict line that
    /// says who wins, by how much, and whether every safety check held.
    /// </summary>
    private static void WriteTable(IAnsiConsole console, string scenario, SimulationSettings s, List<StrategyResult> results)
    {
        CultureInfo c = CultureInfo.InvariantCulture;
        int width = Math.Min(80, console.Profile.Width);
        WriteWrapped(console, width, Markup.Escape($"{scenario}: {s.Frames.ToString("N0", c)} frames, pool {s.Pool}, {s.Resolution} {s.Format.ToUpperInvariant()}, " +
            $"profile {s.Profile} ({s.Iommu}), topology {s.Topology}."));
        WriteWrapped(console, width, "[grey]Times are simulated by the cost model (docs/cost-model.md), the same on every machine; wall time is this machine's.[/]");

        StrategyResult? baseline = results.FirstOrDefault(r => r.Strategy == MappingStrategy.Remap);
        var main = new Table().Border(TableBorder.Rounded).Width(Math.Min(80, console.Profile.Width));
        main.AddColumn("strategy");
        main.AddColumn(new TableColumn("map time\n/frame").RightAligned());
        if (baseline is not null)
        {
            main.AddColumn(new TableColumn("vs remap").RightAligned());
        }

        main.AddColumn(new TableColumn("map\ncalls").RightAligned());
        main.AddColumn(new TableColumn("PTEs\nwritten").RightAligned());
        main.AddColumn(new TableColumn("IOTLB\ninvals").RightAligned());
        main.AddColumn(new TableColumn("safety").Centered());
        foreach (StrategyResult r in results)
        {
            var cells = new List<string> { Markup.Escape(r.Strategy), FormatNs(r.Simulated.MappingNsPerFrame) };
            if (baseline is not null)
            {
                cells.Add(r == baseline ? "[grey]baseline[/]" : Ratio(baseline, r) is { } x ? x.ToString("0.0", c) + "× less" : "-");
            }

            cells.Add(r.Counters.MapCalls.ToString("N0", c));
            cells.Add(r.Counters.PagesMapped.ToString("N0", c));
            cells.Add(r.Counters.IotlbInvalidations.ToString("N0", c));
            cells.Add(r.Safety.Ok && r.Safety.FramesVerified == r.Frames ? "[green]held[/]" : "[red]FAILED[/]");
            main.AddRow([.. cells]);
        }

        console.Write(main);

        var details = new Table().Border(TableBorder.Rounded).Width(Math.Min(80, console.Profile.Width));
        details.AddColumn("strategy");
        details.AddColumn(new TableColumn("cache\nhits/misses").RightAligned());
        details.AddColumn(new TableColumn("IOVA\nallocs").RightAligned());
        bool chains = results.Any(r => r.Counters.ChainsBuilt > 0);
        bool evictions = results.Any(r => r.Counters.CacheEvictions > 0);
        if (chains)
        {
            details.AddColumn(new TableColumn("chains\nbuilt").RightAligned());
        }

        if (evictions)
        {
            details.AddColumn(new TableColumn("cache\nevictions").RightAligned());
        }

        details.AddColumn(new TableColumn("frames\nverified").RightAligned());
        details.AddColumn(new TableColumn("wall\ntime").RightAligned());
        foreach (StrategyResult r in results)
        {
            var cells = new List<string>
            {
                Markup.Escape(r.Strategy),
                $"{r.Counters.CacheHits.ToString("N0", c)}/{r.Counters.CacheMisses.ToString("N0", c)}",
                r.Counters.IovaAllocs.ToString("N0", c),
            };
            if (chains)
            {
                cells.Add(r.Counters.ChainsBuilt.ToString("N0", c));
            }

            if (evictions)
            {
                cells.Add(r.Counters.CacheEvictions.ToString("N0", c));
            }

            cells.Add(Verdict(r.Safety.FramesVerified == r.Frames, $"{r.Safety.FramesVerified.ToString("N0", c)}"));
            cells.Add(r.WallSeconds.ToString("0.00 s", c));
            details.AddRow([.. cells]);
        }

        console.Write(details);
        if (results.Any(r => r.Rogue is not null))
        {
            WriteRogue(console, results);
        }

        foreach (string line in Explain(scenario, s, results, baseline))
        {
            WriteWrapped(console, width, line);
        }
    }

    /// <summary>Writes a markup line wrapped at word boundaries to <paramref name="width"/> columns.</summary>
    internal static void WriteWrapped(IAnsiConsole console, int width, string markup)
    {
        foreach (string line in Wrap(markup, width))
        {
            console.MarkupLine(line);
        }
    }

    /// <summary>
    /// Splits <paramref name="markup"/> into lines of at most <paramref name="width"/> visible characters; a style tag
    /// is only ever closed within one word group, so each line stays valid markup.
    /// </summary>
    internal static IEnumerable<string> Wrap(string markup, int width)
    {
        var line = new System.Text.StringBuilder();
        int visible = 0;
        string? open = null; // the style tag a line break must close and reopen
        foreach (string word in markup.Split(' '))
        {
            int length = Markup.Remove(word).Length;
            if (visible > 0 && visible + 1 + length > width)
            {
                yield return open is null ? line.ToString() : line + "[/]";
                line.Clear();
                visible = 0;
                if (open is not null)
                {
                    line.Append(open);
                }
            }

            if (visible > 0)
            {
                line.Append(' ');
                visible++;
            }

            line.Append(word);
            visible += length;
            // Escaped brackets ("[[", "]]", as Markup.Escape writes them) are matched first, so that the "[0]" inside an
            // escaped "[[0]]" is never taken for a tag.
            foreach (System.Text.RegularExpressions.Match m in System.Text.RegularExpressions.Regex.Matches(word, @"\[\[|\]\]|\[(/?)([^\[\]]*)\]"))
            {
                if (m.Value is "[[" or "]]")
                {
                    continue;
                }

                open = m.Groups[1].Value == "/" ? null : m.Value;
            }
        }

        if (line.Length > 0)
        {
            yield return line.ToString();
        }
    }

    private static double? Ratio(StrategyResult baseline, StrategyResult r) =>
        r.Simulated.MappingNsPerFrame > 0 ? baseline.Simulated.MappingNsPerFrame / r.Simulated.MappingNsPerFrame : null;

    private static void WriteRogue(IAnsiConsole console, List<StrategyResult> results)
    {
        CultureInfo c = CultureInfo.InvariantCulture;
        var rogue = new Table().Border(TableBorder.Rounded).Width(Math.Min(80, console.Profile.Width))
            .Title("the rogue device: accesses to old device addresses after unmap");
        rogue.AddColumn("strategy");
        rogue.AddColumn(new TableColumn("accesses").RightAligned());
        rogue.AddColumn(new TableColumn("blocked").RightAligned());
        rogue.AddColumn(new TableColumn("freed pages\nreached").RightAligned());
        rogue.AddColumn(new TableColumn("freed bytes\nreachable").RightAligned());
        rogue.AddColumn(new TableColumn("window\np50/max").RightAligned());
        foreach (StrategyResult r in results.Where(r => r.Rogue is not null))
        {
            RogueReport g = r.Rogue!;
            rogue.AddRow(
                Markup.Escape(r.Strategy), g.Accesses.ToString("N0", c), g.Blocked.ToString("N0", c),
                Verdict(g.FreedPageAccesses == 0, g.FreedPageAccesses.ToString("N0", c)), g.BytesReachableAfterFree.ToString("N0", c),
                $"{FormatNs(g.WindowP50Ns)}/{FormatNs(g.WindowMaxNs)}");
        }

        console.Write(rogue);
    }

    /// <summary>The lines under the tables: the ceiling, the verdict, and what safety shows.</summary>
    internal static IEnumerable<string> Explain(string scenario, SimulationSettings s, IReadOnlyList<StrategyResult> results, StrategyResult? baseline)
    {
        CultureInfo c = CultureInfo.InvariantCulture;
        if (baseline is not null && results.Count > 1)
        {
            // A cache maps each buffer once per importer instead of once per frame per importer: it cannot save more
            // than frames ÷ pool, unless importers share one mapping (one IOMMU domain).
            double ceiling = (double)s.Frames / s.Pool;
            string churn = scenario == Scenarios.Churn ? " (churn reallocates the pool, so its caches stay below it)" : "";
            yield return Markup.Escape(
                $"Ceiling: a cache maps each buffer once per importer instead of every frame, so it saves at most frames ÷ pool = " +
                $"{s.Frames.ToString("N0", c)} ÷ {s.Pool} = {ceiling.ToString("0.0", c)}×{churn}; only importers that share one mapping " +
                "(domain-share with its importers in one IOMMU domain, --topology shared) go past it.");
            StrategyResult best = results.Where(r => r != baseline).MinBy(r => r.Simulated.MappingNsPerFrame)!;
            StrategyResult[] tied = [.. results.Where(r => r != baseline && r.Simulated.MappingNsPerFrame == best.Simulated.MappingNsPerFrame)];
            string who = tied.Length > 1 ? string.Join(", ", tied.Select(t => t.Strategy)) + " tie" : best.Strategy + " wins";
            string by = Ratio(baseline, best) is { } x ? x.ToString("0.0", c) + "×" : "infinitely";
            yield return $"[bold]Verdict:[/] {Markup.Escape(who)}: {by} less mapping time per frame than remap " +
                $"({FormatNs(baseline.Simulated.MappingNsPerFrame)} → {FormatNs(best.Simulated.MappingNsPerFrame)}).";
        }
        else if (baseline is null)
        {
            yield return "[grey]remap did not run, so nothing is compared with it: add --strategy remap for the baseline.[/]";
        }

        List<StrategyResult> failed = [.. results.Where(r => !r.Safety.Ok || r.Safety.FramesVerified != r.Frames)];
        if (failed.Count == 0)
        {
            long frames = results[0].Safety.FramesVerified;
            yield return $"[green]Safety held[/] for every strategy: {frames.ToString("N0", c)} frames verified byte for byte each; " +
                "0 DMA faults, 0 stale reads, 0 freed-page accesses, 0 leaked pages.";
        }
        else
        {
            yield return $"[red]Safety FAILED[/] for {Markup.Escape(string.Join(", ", failed.Select(f => f.Strategy)))} (details below).";
        }
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

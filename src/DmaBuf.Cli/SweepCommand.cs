using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using DmaBuf.Simulation;
using ScottPlot;
using Spectre.Console;

namespace DmaBuf.Cli;

/// <summary><c>dmabuf sweep</c>: one setting varied over a list of values, every strategy at every value.</summary>
internal static class SweepCommand
{
    /// <summary>The settings a sweep can vary.</summary>
    internal static readonly string[] Parameters = ["pool", "resolution", "cache-budget", "frames", "consumers", "profile", "iommu"];

    public static Command Create(IAnsiConsole console, TextWriter stdout, TextWriter stderr)
    {
        var shared = new SimulationOptions();
        var vary = new Option<string>("--vary")
        {
            Description = $"The setting to vary and its values, NAME=V1,V2,... NAME: {string.Join(", ", Parameters)}.",
            Required = true,
        };
        vary.Validators.Add(r =>
        {
            string? text = r.GetValueOrDefault<string>();
            if (text is not null && ParseVary(text, out _, out _) is { } problem)
            {
                r.AddError(problem);
            }
        });
        var json = new Option<bool>("--json") { Description = "Print one JSON document: {\"vary\", \"points\": [{\"value\", \"results\"}]}." };
        var chart = new Option<string?>("--chart") { Description = "Also draw mapping time per frame per strategy over the swept values to FILE (.png or .svg)." };
        chart.Validators.Add(r => SimulateCommand.ValidateChartPath(r, r.GetValueOrDefault<string?>()));

        var command = new Command("sweep", "Run a scenario under every strategy at each value of one setting, and show how the answer moves.");
        command.Arguments.Add(shared.ScenarioArgument);
        foreach (Option o in shared.All.Append(vary).Append(json).Append(chart))
        {
            command.Options.Add(o);
        }

        command.SetAction(parse =>
        {
            (Scenario scenario, ScenarioOptions baseOptions) = shared.Resolve(parse);
            ParseVary(parse.GetValue(vary)!, out string name, out string[] values);
            ScenarioOptions[] points = [.. values.Select(v => Apply(baseOptions, name, v, scenario))];
            foreach (ScenarioOptions point in points)
            {
                SimulationOptions.CheckFits(scenario, point, shared.MemoryLimit(parse));
            }

            string[] strategies = shared.Strategies(parse);
            bool quiet = parse.GetValue(json);
            var results = new List<SweepPoint>();
            for (int i = 0; i < points.Length; i++)
            {
                results.Add(new SweepPoint(values[i], SimulateCommand.RunStrategies(console, quiet, scenario, strategies, points[i], $"{name}={values[i]}")));
            }

            if (quiet)
            {
                stdout.WriteLine(JsonSerializer.Serialize(new SweepReport(scenario.Name, name, SimulationOptions.Settings(scenario, baseOptions), results), CliJsonContext.Default.SweepReport));
            }
            else
            {
                WriteTable(console, scenario, name, baseOptions, results);
            }

            if (parse.GetValue(chart) is { } path)
            {
                SaveChart(path, scenario.Name, name, results);
                if (!quiet)
                {
                    console.MarkupLine($"chart written to [blue]{Markup.Escape(path)}[/]");
                }
            }

            return (int)SimulateCommand.Report(console, stderr, quiet, [.. results.SelectMany(p => p.Results)]);
        });
        return command;
    }

    /// <summary>Splits <c>NAME=V1,V2</c>; returns a message when it is not valid, else null.</summary>
    internal static string? ParseVary(string text, out string name, out string[] values)
    {
        int eq = text.IndexOf('=', StringComparison.Ordinal);
        name = eq < 0 ? text.Trim() : text[..eq].Trim();
        values = eq < 0 ? [] : [.. text[(eq + 1)..].Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)];
        if (eq < 0)
        {
            return $"--vary '{text}' must be NAME=V1,V2,... (for example pool=4,8,16).";
        }

        if (!Parameters.Contains(name))
        {
            return $"--vary: '{name}' cannot be varied; valid: {string.Join(", ", Parameters)}.";
        }

        if (values.Length == 0)
        {
            return $"--vary {name}: give at least one value after '='.";
        }

        if (values.Length > 64)
        {
            return $"--vary {name}: at most 64 values (got {values.Length}).";
        }

        if (values.Distinct(StringComparer.Ordinal).Count() != values.Length)
        {
            return $"--vary {name}: a value is repeated.";
        }

        foreach (string v in values)
        {
            if (CheckValue(name, v) is { } problem)
            {
                return problem;
            }
        }

        return null;
    }

    private static string? CheckValue(string name, string v)
    {
        switch (name)
        {
            case "pool":
            case "frames":
            case "consumers":
                int max = name == "pool" ? ScenarioOptions.MaxPool : name == "frames" ? ScenarioOptions.MaxFrames : 64;
                return int.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n >= 1 && n <= max
                    ? null
                    : $"--vary {name}: '{v}' is not a whole number between 1 and {max}.";
            case "resolution":
                try
                {
                    Resolution.Parse(v);
                    return null;
                }
                catch (FormatException e)
                {
                    return $"--vary resolution: {e.Message}";
                }

            case "cache-budget":
                return ByteSize.TryParse(v, out long bytes) && bytes > 0
                    ? null
                    : $"--vary cache-budget: '{v}' is not a size; use bytes or a number with K, M or G (for example 64M).";
            case "iommu":
                return SimulationOptions.ParseMode(v) is null ? $"--vary iommu: '{v}' is not valid; valid: strict, lazy, linux-lazy." : null;
            default: // profile: checked when loaded
                return null;
        }
    }

    private static ScenarioOptions Apply(ScenarioOptions o, string name, string v, Scenario scenario)
    {
        CultureInfo c = CultureInfo.InvariantCulture;
        ScenarioOptions copy = o.With(
            frames: name == "frames" ? int.Parse(v, c) : null,
            pool: name == "pool" ? int.Parse(v, c) : null,
            consumers: name == "consumers" ? int.Parse(v, c) : null,
            resolution: name == "resolution" ? Resolution.Parse(v) : null,
            budget: name == "cache-budget" && ByteSize.TryParse(v, out long b) ? b : null,
            mode: name == "iommu" ? SimulationOptions.ParseMode(v) : null,
            profile: name == "profile" ? LoadProfile(v) : null);
        if (copy.Consumers > scenario.Consumers.Count)
        {
            throw new UsageException($"--vary consumers: {scenario.Name} has {scenario.Consumers.Count} consumers ({string.Join(", ", scenario.Consumers)}); {copy.Consumers} is too many.");
        }

        return copy;
    }

    private static CostProfile LoadProfile(string v)
    {
        try
        {
            return CostProfile.Load(v);
        }
        catch (CostProfileException e)
        {
            throw new UsageException($"--vary profile: {e.Message}");
        }
    }

    private static void WriteTable(IAnsiConsole console, Scenario scenario, string name, ScenarioOptions o, List<SweepPoint> points)
    {
        CultureInfo c = CultureInfo.InvariantCulture;
        var table = new Table().Border(TableBorder.Rounded)
            .Title(Markup.Escape($"{scenario.Name}: mapping time per frame (map calls) as {name} varies; ") +
                string.Join(", ", new[] { ("frames", $"{o.Frames} frames"), ("pool", $"pool {o.Pool}"), ("resolution", o.Resolution.ToString()) }
                    .Where(x => x.Item1 != name).Select(x => Markup.Escape(x.Item2))));
        table.AddColumn(Markup.Escape(name));
        foreach (StrategyResult r in points[0].Results)
        {
            table.AddColumn(new TableColumn(Markup.Escape(r.Strategy)).RightAligned());
        }

        table.AddColumn(new TableColumn("safety").RightAligned());
        foreach (SweepPoint p in points)
        {
            bool ok = p.Results.All(r => r.Safety.Ok);
            table.AddRow([
                Markup.Escape(p.Value),
                .. p.Results.Select(r => $"{SimulateCommand.FormatNs(r.Simulated.MappingNsPerFrame)} ({r.Counters.MapCalls.ToString("N0", c)})"),
                ok ? "[green]held[/]" : "[red]failed[/]",
            ]);
        }

        console.Write(table);
    }

    private static void SaveChart(string path, string scenario, string name, List<SweepPoint> points)
    {
        using var plot = new Plot();
        string[] strategies = [.. points[0].Results.Select(r => r.Strategy)];
        double[] xs = [.. Enumerable.Range(0, points.Count).Select(i => (double)i)];
        for (int s = 0; s < strategies.Length; s++)
        {
            double[] ys = [.. points.Select(p => p.Results[s].Simulated.MappingNsPerFrame / 1000.0)];
            var line = plot.Add.Scatter(xs, ys);
            line.LegendText = strategies[s];
            line.LineWidth = 2;
            line.MarkerSize = 7;
        }

        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            [.. points.Select((p, i) => new Tick(i, p.Value))]);
        plot.Title($"{scenario}: mapping time per frame as {name} varies");
        plot.XLabel(name);
        plot.YLabel("µs per frame (simulated)");
        plot.ShowLegend(Edge.Right);
        if (Path.GetExtension(path).Equals(".svg", StringComparison.OrdinalIgnoreCase))
        {
            plot.SaveSvg(path, 900, 500);
        }
        else
        {
            plot.SavePng(path, 900, 500);
        }
    }
}

/// <summary>One value of a sweep and every strategy's result there.</summary>
internal sealed record SweepPoint(string Value, IReadOnlyList<StrategyResult> Results);

/// <summary>The document <c>dmabuf sweep --json</c> prints.</summary>
internal sealed record SweepReport(string Scenario, string Vary, SimulationSettings Settings, IReadOnlyList<SweepPoint> Points);

using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using DmaBuf.Stress;
using Spectre.Console;

namespace DmaBuf.Cli;

/// <summary>
/// <c>dmabuf stress</c>: the model-based workload and the race scenarios of the test suite, for as long as asked. Half
/// the time runs random programs checked step by step against the model; the other half runs every race on real
/// threads, round robin. Exit 1 on the first violation, with the shrunk reproduction.
/// </summary>
internal static class StressCommand
{
    public static Command Create(IAnsiConsole console, TextWriter stdout, TextWriter stderr)
    {
        var seconds = new Option<int>("--seconds")
        {
            Description = "How long to run, 1 to 86400 seconds (default 10): half model programs, half races.",
            DefaultValueFactory = _ => 10,
            CustomParser = r => SimulateCommand.ParseCount(r, "--seconds", 1, 86_400),
        };
        var seed = new Option<ulong?>("--seed")
        {
            Description = "Seed of the model programs, a whole number from 0 to 18446744073709551615 (default: drawn at random and printed).",
            CustomParser = r =>
            {
                string text = r.Tokens.Count > 0 ? r.Tokens[0].Value : "";
                if (ulong.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out ulong value))
                {
                    return value;
                }

                r.AddError($"--seed '{text}' is not a whole number from 0 to {ulong.MaxValue}.");
                return null;
            },
        };
        var command = new Command("stress", "Run the model-based lifetime workload and the race scenarios; exit 1 on a violation, printing its reproduction.");
        command.Options.Add(seconds);
        command.Options.Add(seed);
        command.SetAction(parse => (int)Run(console, stdout, stderr, TimeSpan.FromSeconds(parse.GetValue(seconds)), parse.GetValue(seed)));
        return command;
    }

    private static ExitCode Run(IAnsiConsole console, TextWriter stdout, TextWriter stderr, TimeSpan duration, ulong? seedOption)
    {
        ulong seed = seedOption ?? (ulong)Random.Shared.NextInt64(1, long.MaxValue);
        TimeSpan half = duration / 2;
        ModelRunResult model = null!;
        var races = new List<(string Name, RaceRunResult Result)>();
        var clock = Stopwatch.StartNew();
        bool interactive = console.Profile.Capabilities.Interactive;
        if (interactive)
        {
            console.Progress()
                .AutoClear(false)
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new ElapsedTimeColumn())
                .Start(ctx =>
                {
                    ProgressTask modelTask = ctx.AddTask($"model (seed {seed})", maxValue: half.TotalSeconds);
                    ProgressTask raceTask = ctx.AddTask("races", maxValue: duration.TotalSeconds - half.TotalSeconds);
                    model = RunModel(seed, half, ops =>
                    {
                        modelTask.Value = Math.Min(clock.Elapsed.TotalSeconds, half.TotalSeconds);
                        modelTask.Description = $"model (seed {seed}): {ops:N0} ops";
                    });
                    modelTask.Value = modelTask.MaxValue;
                    if (model.Passed)
                    {
                        TimeSpan raceStart = clock.Elapsed;
                        RunRaces(duration - clock.Elapsed, races, (iterations, failures) =>
                        {
                            raceTask.Value = Math.Min((clock.Elapsed - raceStart).TotalSeconds, raceTask.MaxValue);
                            raceTask.Description = $"races: {iterations:N0} iterations, {failures} violations";
                        });
                    }

                    raceTask.Value = raceTask.MaxValue;
                });
        }
        else
        {
            model = RunModel(seed, half, null);
            if (model.Passed)
            {
                RunRaces(duration - clock.Elapsed, races, null);
            }
        }

        WriteSummary(console, seed, model, races, clock.Elapsed);
        if (!model.Passed)
        {
            stderr.WriteLine($"error: the model found a violation: {model.Violation}");
            stderr.WriteLine(model.Reproduction);
            return ExitCode.SafetyCheckFailed;
        }

        foreach ((string name, RaceRunResult r) in races.Where(r => !r.Result.Passed))
        {
            stderr.WriteLine($"error: race {name} broke a rule in {r.Failures} of {r.Iterations} iterations:");
            foreach (string m in r.Messages)
            {
                stderr.WriteLine($"  {m}");
            }

            stderr.WriteLine($"  reproduce from the repository: dotnet test --project tests/DmaBuf.Stress.Tests --filter-method '*{name.Replace("Async", "", StringComparison.Ordinal)}*'");
        }

        stdout.Flush();
        return races.All(r => r.Result.Passed) ? ExitCode.Ok : ExitCode.SafetyCheckFailed;
    }

    private static ModelRunResult RunModel(ulong seed, TimeSpan budget, Action<long>? progress) =>
        ModelWorkload.Run(new ModelRunOptions
        {
            Seed = seed,
            Operations = long.MaxValue,
            TimeBudget = budget,
            Progress = progress,
        });

    /// <summary>Every race, round robin in slices of 50 iterations, until the time is up.</summary>
    private static void RunRaces(TimeSpan budget, List<(string Name, RaceRunResult Result)> totals, Action<long, long>? progress)
    {
        var clock = Stopwatch.StartNew();
        var sums = RaceScenarios.All.ToDictionary(s => s.Name, _ => new RaceRunResult(0, 0, []));
        long iterations = 0, failures = 0;
        do
        {
            foreach ((string name, Func<Task> run) in RaceScenarios.All)
            {
                RaceRunResult slice = RaceRunner.RunOnThreads(run, 50);
                RaceRunResult sum = sums[name];
                sums[name] = new RaceRunResult(sum.Iterations + slice.Iterations, sum.Failures + slice.Failures,
                    [.. sum.Messages.Concat(slice.Messages).Distinct().Take(10)]);
                iterations += slice.Iterations;
                failures += slice.Failures;
                progress?.Invoke(iterations, failures);
            }
        }
        while (clock.Elapsed < budget && failures == 0);

        totals.AddRange(RaceScenarios.All.Select(s => (s.Name, sums[s.Name])));
    }

    private static void WriteSummary(IAnsiConsole console, ulong seed, ModelRunResult model, List<(string Name, RaceRunResult Result)> races, TimeSpan elapsed)
    {
        CultureInfo c = CultureInfo.InvariantCulture;
        var table = new Table().Border(TableBorder.Rounded);
        table.AddColumn("workload");
        table.AddColumn(new TableColumn("runs").RightAligned());
        table.AddColumn(new TableColumn("violations").RightAligned());
        table.AddRow("model operations", model.Operations.ToString("N0", c), model.Passed ? "0" : "1");
        table.AddRow("  programs", model.Programs.ToString("N0", c), "");
        foreach ((string name, RaceRunResult r) in races)
        {
            table.AddRow(Markup.Escape(name.Replace("Async", "", StringComparison.Ordinal)), r.Iterations.ToString("N0", c), r.Failures.ToString(c));
        }

        console.Write(table);
        long raceIterations = races.Sum(r => (long)r.Result.Iterations);
        long violations = (model.Passed ? 0 : 1) + races.Sum(r => (long)r.Result.Failures);
        console.WriteLine(string.Create(c,
            $"stress: {model.Operations:N0} model operations (seed {seed}), {raceIterations:N0} race iterations over {races.Count} races, {violations} violations, {elapsed.TotalSeconds:F1} s"));
    }
}

using Microsoft.Coyote;
using Microsoft.Coyote.SystematicTesting;
using DmaBuf.Testing.Coyote;

namespace DmaBuf.Stress.Tests;

/// <summary>
/// Systematic concurrency tests of every race in <see cref="RaceScenarios"/> with Coyote's in-process testing engine.
/// Coyote controls only rewritten code, so the scenarios run from copies of DmaBuf.dll and DmaBuf.Stress.dll that the
/// CoyoteRewrite build step rewrote into bin/.../coyote/; each iteration explores another interleaving.
/// </summary>
/// <remarks>
/// Coyote 1.7 controls Monitor, Task, Interlocked and Volatile, not <see cref="Lock"/>. A side blocked on a lock Coyote
/// does not see would hang the engine, so each test bounds it: a deadlock timeout and a wall-clock
/// guard around the whole run that fails the test instead of stalling the suite. (Coyote's own testing timeout is not
/// used: it turns the iteration count into a time budget.)
/// </remarks>
public sealed class RaceCoyoteTests
{
    private static readonly TimeSpan s_guard = TimeSpan.FromSeconds(Math.Max(120, StressSettings.CoyoteIterations / 50));

    public static TheoryData<string> Scenarios { get; } = [.. RaceScenarios.All.Select(s => s.Name)];

    [Theory]
    [MemberData(nameof(Scenarios))]
    public async Task Race_CoyoteSystematic_NoRuleBroken(string scenario)
    {
        if (StressSettings.Races is { } selected && !selected.Contains(scenario))
        {
            Assert.Skip($"{scenario} is not in DMABUF_STRESS_RACES.");
        }

        Func<Task> test = RewrittenScenario(scenario);
        Configuration configuration = Configuration.Create()
            .WithTestingIterations(StressSettings.CoyoteIterations)
            .WithRandomGeneratorSeed(StressSettings.CoyoteSeed)
            .WithDeadlockTimeout(5_000)
            .WithPartiallyControlledConcurrencyAllowed(true)
            .WithPotentialDeadlocksReportedAsBugs(true)
            .WithTelemetryEnabled(false);
        using TestingEngine engine = TestingEngine.Create(configuration, test);

        Task run = Task.Run(engine.Run, TestContext.Current.CancellationToken);
        Task finished = await Task.WhenAny(run, Task.Delay(s_guard + TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken));
        Assert.True(finished == run, $"{scenario}: the Coyote engine did not finish within {s_guard}; a side is blocked where Coyote cannot schedule it.");
        await run;

        TestContext.Current.TestOutputHelper?.WriteLine(engine.GetReport());
        RewrittenAssemblies.AssertClean(engine, StressSettings.CoyoteIterations, scenario);
    }

    private static readonly RewrittenAssemblies s_rewritten = new("DmaBuf.Stress.Tests.csproj", "DmaBuf", "DmaBuf.Stress");

    private static Func<Task> RewrittenScenario(string name) => s_rewritten.RewrittenScenario(typeof(RaceScenarios), name, "DmaBuf");
}

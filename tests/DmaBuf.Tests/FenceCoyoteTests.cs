using System.Reflection;
using Microsoft.Coyote;
using Microsoft.Coyote.Rewriting;
using Microsoft.Coyote.SystematicTesting;
using DmaBuf.Testing.Coyote;

namespace DmaBuf.Tests;

// Systematic concurrency tests of the fence signal/callback races (st-dma-fence's test_race_signal_callback and
// add/remove against signal) with Coyote's in-process testing engine. Coyote controls only rewritten code, so the
// scenarios in FenceRace run from copies of DmaBuf.dll and DmaBuf.Tests.dll that the CoyoteRewrite build step
// rewrote into bin/.../coyote/; each iteration explores another interleaving of their tasks, locks, volatile and
// interlocked operations.
public sealed class FenceCoyoteTests
{
    private const uint Iterations = 1000;

    [Theory]
    [InlineData(nameof(FenceRace.SignalBeforeAddAsync))]
    [InlineData(nameof(FenceRace.SignalAfterAddAsync))]
    [InlineData(nameof(FenceRace.AddRemoveSignalAsync))]
    public void RaceSignalCallback_CoyoteSystematic_NoCallbackLostOrRunTwice(string scenario)
    {
        Func<Task> test = RewrittenScenario(scenario);
        Configuration configuration = Configuration.Create()
            .WithTestingIterations(Iterations)
            .WithRandomGeneratorSeed(20250)
            .WithMemoryAccessRaceCheckingEnabled(true)
            .WithTelemetryEnabled(false);
        using TestingEngine engine = TestingEngine.Create(configuration, test);

        engine.Run();

        TestReport report = engine.TestReport;
        TestContext.Current.TestOutputHelper?.WriteLine(engine.GetReport());
        Assert.True(report.NumOfFoundBugs == 0, string.Join(Environment.NewLine, report.BugReports) + Environment.NewLine + engine.ReadableTrace);
        Assert.Empty(report.InternalErrors);
        // An uncontrolled call (say a Task API Coyote 1.7 does not know) would hide interleavings behind it.
        Assert.Empty(report.UncontrolledInvocations);
        Assert.Equal((int)Iterations, report.NumOfExploredUnfairPaths + report.NumOfExploredFairPaths);
        // The scenarios run two to four tasks at once; a report without concurrency means nothing was controlled.
        Assert.True(report.MaxConcurrencyDegree >= 2, $"max concurrency degree {report.MaxConcurrencyDegree}");
    }

    private static readonly RewrittenAssemblies s_rewritten = new("DmaBuf.Tests.csproj", "DmaBuf", "DmaBuf.Tests");

    private static Func<Task> RewrittenScenario(string name)
    {
        Func<Task> scenario = s_rewritten.Scenario(typeof(FenceRace), name);
        Assert.True(RewritingEngine.IsAssemblyRewritten(scenario.Method.DeclaringType!.Assembly), $"{scenario.Method.DeclaringType.Assembly.Location} is not rewritten by Coyote.");
        Assembly framework = s_rewritten.Load("DmaBuf");
        Assert.True(RewritingEngine.IsAssemblyRewritten(framework), $"{framework.Location} is not rewritten by Coyote.");
        return scenario;
    }
}

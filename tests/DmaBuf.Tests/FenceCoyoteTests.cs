using Microsoft.Coyote;
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

        TestContext.Current.TestOutputHelper?.WriteLine(engine.GetReport());
        RewrittenAssemblies.AssertClean(engine, Iterations, scenario);
    }

    private static readonly RewrittenAssemblies s_rewritten = new("DmaBuf.Tests.csproj", "DmaBuf", "DmaBuf.Tests");

    private static Func<Task> RewrittenScenario(string name) => s_rewritten.RewrittenScenario(typeof(FenceRace), name, "DmaBuf");
}

using Microsoft.Coyote;
using Microsoft.Coyote.SystematicTesting;
using DmaBuf.Testing.Coyote;

namespace DmaBuf.Linux.Tests;

// Systematic concurrency tests of the receive gate (GateRace), as LedgerCoyoteTests runs the ledger's races.
public sealed class ReceiveGateCoyoteTests
{
    private static readonly uint Iterations =
        uint.TryParse(Environment.GetEnvironmentVariable("DMABUF_COYOTE_ITERATIONS"), out uint n) && n > 0 ? n : 1000;

    private static readonly RewrittenAssemblies s_rewritten = new("DmaBuf.Linux.Tests.csproj", "DmaBuf.Linux", "DmaBuf.Linux.Tests");

    [Theory]
    [InlineData(nameof(GateRace.ThreeReceiversOneAtATimeAsync))]
    [InlineData(nameof(GateRace.AReceiverThatGivesUp_LeavesNoWakeUpLostAsync))]
    public void GateRace_CoyoteSystematic_OneReceiverAtATime_NoWakeUpLost(string scenario)
    {
        Func<Task> test = s_rewritten.RewrittenScenario(typeof(GateRace), scenario, "DmaBuf.Linux");
        Configuration configuration = Configuration.Create()
            .WithTestingIterations(Iterations)
            .WithRandomGeneratorSeed(20261)
            .WithTelemetryEnabled(false);
        using TestingEngine engine = TestingEngine.Create(configuration, test);

        engine.Run();

        TestContext.Current.TestOutputHelper?.WriteLine(engine.GetReport());
        RewrittenAssemblies.AssertClean(engine, Iterations, scenario);
    }
}

using Microsoft.Coyote;
using Microsoft.Coyote.SystematicTesting;
using DmaBuf.Testing.Coyote;

namespace DmaBuf.Linux.Tests;

// Systematic concurrency tests of the channel ledger's races (two sends of one new buffer, send vs close, receive vs
// close) with Coyote's in-process testing engine. Coyote controls only rewritten code, so the scenarios in LedgerRace
// run from copies of DmaBuf.Linux.dll and DmaBuf.Linux.Tests.dll that the CoyoteRewrite build step rewrote into
// bin/.../coyote/; each iteration explores another interleaving of their tasks and the ledger's Monitor locks.
public sealed class LedgerCoyoteTests
{
    // 1,000 per race in CI; the long run sets DMABUF_COYOTE_ITERATIONS (e.g. 100000).
    private static readonly uint Iterations =
        uint.TryParse(Environment.GetEnvironmentVariable("DMABUF_COYOTE_ITERATIONS"), out uint n) && n > 0 ? n : 1000;

    [Theory]
    [InlineData(nameof(LedgerRace.TwoSendsOfOneNewBufferAsync))]
    [InlineData(nameof(LedgerRace.SendVersusCloseAsync))]
    [InlineData(nameof(LedgerRace.RegisterVersusCloseAsync))]
    public void LedgerRace_CoyoteSystematic_NoReorderingAndEveryReferenceDroppedOnce(string scenario)
    {
        Func<Task> test = RewrittenScenario(scenario);
        Configuration configuration = Configuration.Create()
            .WithTestingIterations(Iterations)
            .WithRandomGeneratorSeed(20251)
            .WithMemoryAccessRaceCheckingEnabled(true)
            .WithTelemetryEnabled(false);
        using TestingEngine engine = TestingEngine.Create(configuration, test);

        engine.Run();

        TestContext.Current.TestOutputHelper?.WriteLine(engine.GetReport());
        RewrittenAssemblies.AssertClean(engine, Iterations, scenario);
    }

    private static readonly RewrittenAssemblies s_rewritten = new("DmaBuf.Linux.Tests.csproj", "DmaBuf.Linux", "DmaBuf.Linux.Tests");

    private static Func<Task> RewrittenScenario(string name) => s_rewritten.RewrittenScenario(typeof(LedgerRace), name, "DmaBuf.Linux");
}

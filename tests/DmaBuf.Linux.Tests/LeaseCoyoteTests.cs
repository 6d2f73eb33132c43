using Microsoft.Coyote;
using Microsoft.Coyote.SystematicTesting;
using DmaBuf.Testing.Coyote;

namespace DmaBuf.Linux.Tests;

// Systematic concurrency tests of the lease path's races (lease vs the peer's forget, a lease's disposal vs close, a
// lease vs the same id's next delivery, two disposals of one lease vs the next delivery, close vs a lease) with Coyote's in-process testing engine, on the rewritten
// copies of DmaBuf.Linux.dll and DmaBuf.Linux.Tests.dll as LedgerCoyoteTests does. Besides the ledger's Monitor locks
// and the lease pool's, the atomic operations of the mapping's count and the lease's generation are scheduling points.
public sealed class LeaseCoyoteTests
{
    // 1,000 per race in CI; the long run sets DMABUF_COYOTE_ITERATIONS (e.g. 100000).
    private static readonly uint Iterations =
        uint.TryParse(Environment.GetEnvironmentVariable("DMABUF_COYOTE_ITERATIONS"), out uint n) && n > 0 ? n : 1000;

    private static readonly RewrittenAssemblies s_rewritten = new("DmaBuf.Linux.Tests.csproj", "DmaBuf.Linux", "DmaBuf.Linux.Tests");

    [Theory]
    [InlineData(nameof(LeaseRace.LeaseVersusPeerForgetAsync))]
    [InlineData(nameof(LeaseRace.LeaseDisposeVersusCloseAsync))]
    [InlineData(nameof(LeaseRace.LeaseVersusRedeliveryAsync))]
    [InlineData(nameof(LeaseRace.TwoDisposalsVersusRedeliveryAsync))]
    [InlineData(nameof(LeaseRace.CloseVersusLeaseAsync))]
    public void LeaseRace_CoyoteSystematic_FrameReadsRightAndTheMappingGoesOnce(string scenario)
    {
        Func<Task> test = s_rewritten.RewrittenScenario(typeof(LeaseRace), scenario, "DmaBuf.Linux");
        Configuration configuration = Configuration.Create()
            .WithTestingIterations(Iterations)
            .WithRandomGeneratorSeed(20252)
            .WithMemoryAccessRaceCheckingEnabled(true)
            .WithAtomicOperationRaceCheckingEnabled(true)
            .WithTelemetryEnabled(false);
        using TestingEngine engine = TestingEngine.Create(configuration, test);

        engine.Run();

        TestContext.Current.TestOutputHelper?.WriteLine(engine.GetReport());
        RewrittenAssemblies.AssertClean(engine, Iterations, scenario);
    }
}

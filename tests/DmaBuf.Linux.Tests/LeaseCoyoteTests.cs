using DmaBuf.Testing.Coyote;

namespace DmaBuf.Linux.Tests;

// Systematic concurrency tests of the lease path's races (lease vs the peer's forget, a lease's disposal vs close, a
// lease vs the same id's next delivery, two disposals of one lease vs the next delivery, close vs a lease) with Coyote's in-process testing engine, on the rewritten
// copies of DmaBuf.Linux.dll and DmaBuf.Linux.Tests.dll as LedgerCoyoteTests does. Besides the ledger's Monitor locks
// and the lease pool's, the atomic operations of the mapping's count and the lease's generation are scheduling points.
public sealed class LeaseCoyoteTests
{
    private static readonly RewrittenAssemblies s_rewritten = new("DmaBuf.Linux.Tests.csproj", "DmaBuf.Linux", "DmaBuf.Linux.Tests");

    [Theory]
    [InlineData(nameof(LeaseRace.LeaseVersusPeerForgetAsync))]
    [InlineData(nameof(LeaseRace.LeaseDisposeVersusCloseAsync))]
    [InlineData(nameof(LeaseRace.LeaseVersusRedeliveryAsync))]
    [InlineData(nameof(LeaseRace.TwoDisposalsVersusRedeliveryAsync))]
    [InlineData(nameof(LeaseRace.CloseVersusLeaseAsync))]
    public void LeaseRace_CoyoteSystematic_FrameReadsRightAndTheMappingGoesOnce(string scenario)
    {
        s_rewritten.RunSystematic(typeof(LeaseRace), scenario, "DmaBuf.Linux", seed: 20252, atomics: true);
    }
}

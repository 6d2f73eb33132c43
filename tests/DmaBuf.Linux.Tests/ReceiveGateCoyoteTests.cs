using DmaBuf.Testing.Coyote;

namespace DmaBuf.Linux.Tests;

// Systematic concurrency tests of the receive gate (GateRace), as LedgerCoyoteTests runs the ledger's races.
public sealed class ReceiveGateCoyoteTests
{
    private static readonly RewrittenAssemblies s_rewritten = new("DmaBuf.Linux.Tests.csproj", "DmaBuf.Linux", "DmaBuf.Linux.Tests");

    [Theory]
    [InlineData(nameof(GateRace.ThreeReceiversOneAtATimeAsync))]
    [InlineData(nameof(GateRace.AReceiverThatGivesUp_LeavesNoWakeUpLostAsync))]
    public void GateRace_CoyoteSystematic_OneReceiverAtATime_NoWakeUpLost(string scenario)
    {
        s_rewritten.RunSystematic(typeof(GateRace), scenario, "DmaBuf.Linux", seed: 20261, atomics: true);
    }
}

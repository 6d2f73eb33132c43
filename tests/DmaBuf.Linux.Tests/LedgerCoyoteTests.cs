using DmaBuf.Testing.Coyote;

namespace DmaBuf.Linux.Tests;

// Systematic concurrency tests of the channel ledger's races (two sends of one new buffer, send vs close, receive vs
// close) with Coyote's in-process testing engine. Coyote controls only rewritten code, so the scenarios in LedgerRace
// run from copies of DmaBuf.Linux.dll and DmaBuf.Linux.Tests.dll that the CoyoteRewrite build step rewrote into
// bin/.../coyote/; each iteration explores another interleaving of their tasks and the ledger's Monitor locks.
public sealed class LedgerCoyoteTests
{

    [Theory]
    [InlineData(nameof(LedgerRace.TwoSendsOfOneNewBufferAsync))]
    [InlineData(nameof(LedgerRace.SendVersusCloseAsync))]
    [InlineData(nameof(LedgerRace.RegisterVersusCloseAsync))]
    public void LedgerRace_CoyoteSystematic_NoReorderingAndEveryReferenceDroppedOnce(string scenario)
    {
        s_rewritten.RunSystematic(typeof(LedgerRace), scenario, "DmaBuf.Linux", seed: 20251);
    }

    private static readonly RewrittenAssemblies s_rewritten = new("DmaBuf.Linux.Tests.csproj", "DmaBuf.Linux", "DmaBuf.Linux.Tests");
}

using DmaBuf.Testing.Coyote;

namespace DmaBuf.Tests;

// Systematic concurrency tests of the fence signal/callback races (st-dma-fence's test_race_signal_callback and
// add/remove against signal) with Coyote's in-process testing engine. Coyote controls only rewritten code, so the
// scenarios in FenceRace run from copies of DmaBuf.dll and DmaBuf.Tests.dll that the CoyoteRewrite build step
// rewrote into bin/.../coyote/; each iteration explores another interleaving of their tasks, locks, volatile and
// interlocked operations.
public sealed class FenceCoyoteTests
{
    [Theory]
    [InlineData(nameof(FenceRace.SignalBeforeAddAsync))]
    [InlineData(nameof(FenceRace.SignalAfterAddAsync))]
    [InlineData(nameof(FenceRace.AddRemoveSignalAsync))]
    public void RaceSignalCallback_CoyoteSystematic_NoCallbackLostOrRunTwice(string scenario)
    {
        s_rewritten.RunSystematic(typeof(FenceRace), scenario, "DmaBuf", seed: 20250);
    }

    private static readonly RewrittenAssemblies s_rewritten = new("DmaBuf.Tests.csproj", "DmaBuf", "DmaBuf.Tests");
}

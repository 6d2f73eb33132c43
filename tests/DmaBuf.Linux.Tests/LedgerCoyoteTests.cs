using System.Reflection;
using System.Runtime.Loader;
using Microsoft.Coyote;
using Microsoft.Coyote.Rewriting;
using Microsoft.Coyote.SystematicTesting;

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

        TestReport report = engine.TestReport;
        TestContext.Current.TestOutputHelper?.WriteLine(engine.GetReport());
        Assert.True(report.NumOfFoundBugs == 0, string.Join(Environment.NewLine, report.BugReports) + Environment.NewLine + engine.ReadableTrace);
        Assert.Empty(report.InternalErrors);
        // An uncontrolled call (say a Task API Coyote 1.7 does not know) would hide interleavings behind it.
        Assert.Empty(report.UncontrolledInvocations);
        Assert.Equal((int)Iterations, report.NumOfExploredUnfairPaths + report.NumOfExploredFairPaths);
        // The scenarios run two tasks at once; a report without concurrency means nothing was controlled.
        Assert.True(report.MaxConcurrencyDegree >= 2, $"max concurrency degree {report.MaxConcurrencyDegree}");
    }

    private static Func<Task> RewrittenScenario(string name)
    {
        Assembly tests = Rewritten.Tests;
        Assert.True(RewritingEngine.IsAssemblyRewritten(tests), $"{tests.Location} is not rewritten by Coyote.");
        Assert.True(RewritingEngine.IsAssemblyRewritten(Rewritten.Framework), $"{Rewritten.Framework.Location} is not rewritten by Coyote.");
        MethodInfo method = tests.GetType(typeof(LedgerRace).FullName!, throwOnError: true)!
            .GetMethod(name, BindingFlags.Public | BindingFlags.Static)!;
        return method.CreateDelegate<Func<Task>>();
    }

    /// <summary>The rewritten copies, loaded once beside the originals. Everything else resolves from the default context.</summary>
    private static class Rewritten
    {
        private static readonly string s_directory = Path.Combine(AppContext.BaseDirectory, "coyote");
        private static readonly Context s_context = new(s_directory);

        public static Assembly Tests { get; } = Load("DmaBuf.Linux.Tests");

        public static Assembly Framework { get; } = Load("DmaBuf.Linux");

        private static Assembly Load(string name)
        {
            string path = Path.Combine(s_directory, name + ".dll");
            if (!File.Exists(path))
            {
                throw new FileNotFoundException("The Coyote-rewritten assembly is missing; the CoyoteRewrite target of DmaBuf.Linux.Tests.csproj makes it after build.", path);
            }

            return s_context.LoadFromAssemblyName(new AssemblyName(name));
        }

        private sealed class Context(string directory) : AssemblyLoadContext("coyote-rewritten")
        {
            protected override Assembly? Load(AssemblyName assemblyName) =>
                assemblyName.Name is "DmaBuf.Linux" or "DmaBuf.Linux.Tests"
                    ? LoadFromAssemblyPath(Path.Combine(directory, assemblyName.Name + ".dll"))
                    : null;
        }
    }
}

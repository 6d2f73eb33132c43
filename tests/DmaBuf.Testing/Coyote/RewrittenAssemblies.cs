using System.Reflection;
using System.Runtime.Loader;
using Microsoft.Coyote;
using Microsoft.Coyote.Rewriting;
using Microsoft.Coyote.SystematicTesting;

namespace DmaBuf.Testing.Coyote;

/// <summary>
/// The copies of a test project's assemblies that its CoyoteRewrite build step rewrote into bin/.../coyote/, loaded
/// once in their own load context beside the originals (everything else resolves from the default context). Coyote
/// controls only rewritten code, so the systematic tests run their scenarios from here.
/// </summary>
public sealed class RewrittenAssemblies
{
    private readonly string _directory = Path.Combine(AppContext.BaseDirectory, "coyote");
    private readonly string _project;
    private readonly Context _context;

    /// <summary>Loads <paramref name="names"/> (assembly names) from the coyote directory of <paramref name="project"/>'s output.</summary>
    public RewrittenAssemblies(string project, params string[] names)
    {
        _project = project;
        _context = new Context(_directory, [.. names]);
    }

    /// <summary>The rewritten copy of <paramref name="name"/>.</summary>
    /// <exception cref="FileNotFoundException">The build step has not made it.</exception>
    public Assembly Load(string name)
    {
        string path = Path.Combine(_directory, name + ".dll");
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"The Coyote-rewritten assembly is missing; the CoyoteRewrite target of {_project} makes it after build.", path);
        }

        return _context.LoadFromAssemblyName(new AssemblyName(name));
    }

    /// <summary>The static, parameterless <c>Task</c> method <paramref name="method"/> of <paramref name="type"/>, from its rewritten copy.</summary>
    public Func<Task> Scenario(Type type, string method)
    {
        ArgumentNullException.ThrowIfNull(type);
        Assembly assembly = Load(type.Assembly.GetName().Name!);
        MethodInfo found = assembly.GetType(type.FullName!, throwOnError: true)!
            .GetMethod(method, BindingFlags.Public | BindingFlags.Static, Type.EmptyTypes)
            ?? throw new MissingMethodException(type.FullName, method);
        return found.CreateDelegate<Func<Task>>();
    }

    /// <summary>
    /// <see cref="Scenario"/>, after checking that it and <paramref name="framework"/> (the assembly under test) really are
    /// rewritten: Coyote schedules nothing in code it has not rewritten.
    /// </summary>
    public Func<Task> RewrittenScenario(Type type, string method, string framework)
    {
        Func<Task> scenario = Scenario(type, method);
        Assembly declaring = scenario.Method.DeclaringType!.Assembly;
        Assert.True(RewritingEngine.IsAssemblyRewritten(declaring), $"{declaring.Location} is not rewritten by Coyote.");
        Assembly tested = Load(framework);
        Assert.True(RewritingEngine.IsAssemblyRewritten(tested), $"{tested.Location} is not rewritten by Coyote.");
        return scenario;
    }

    /// <summary>
    /// Coyote iterations per scenario: 1,000 in CI; a long run sets <c>DMABUF_COYOTE_ITERATIONS</c> (e.g. 100000).
    /// </summary>
    public static uint Iterations { get; } =
        uint.TryParse(Environment.GetEnvironmentVariable("DMABUF_COYOTE_ITERATIONS"), out uint n) && n > 0 ? n : 1000;

    /// <summary>
    /// Runs scenario <paramref name="method"/> of <paramref name="type"/> (its rewritten copy, with
    /// <paramref name="framework"/> under test) for <see cref="Iterations"/> interleavings from <paramref name="seed"/>,
    /// with data races on shared memory checked (and, when <paramref name="atomics"/>, every atomic operation a
    /// scheduling point), then asserts the run clean (<see cref="AssertClean"/>).
    /// </summary>
    public void RunSystematic(Type type, string method, string framework, uint seed, bool atomics = false)
    {
        Func<Task> test = RewrittenScenario(type, method, framework);
        Configuration configuration = Configuration.Create()
            .WithTestingIterations(Iterations)
            .WithRandomGeneratorSeed(seed)
            .WithMemoryAccessRaceCheckingEnabled(true)
            .WithAtomicOperationRaceCheckingEnabled(atomics)
            .WithTelemetryEnabled(false);
        using TestingEngine engine = TestingEngine.Create(configuration, test);

        engine.Run();

        TestContext.Current.TestOutputHelper?.WriteLine(engine.GetReport());
        AssertClean(engine, Iterations, method);
    }

    /// <summary>
    /// Asserts that a finished engine found no bug, had no internal error or uncontrolled invocation (which would hide
    /// interleavings behind it), explored every iteration, and ran at least two tasks at once.
    /// </summary>
    public static void AssertClean(TestingEngine engine, uint iterations, string scenario)
    {
        ArgumentNullException.ThrowIfNull(engine);
        TestReport report = engine.TestReport;
        Assert.True(report.NumOfFoundBugs == 0, $"{scenario}: {string.Join(Environment.NewLine, report.BugReports)}{Environment.NewLine}{engine.ReadableTrace}");
        Assert.Empty(report.InternalErrors);
        Assert.Empty(report.UncontrolledInvocations);
        Assert.Equal((int)iterations, report.NumOfExploredUnfairPaths + report.NumOfExploredFairPaths);
        Assert.True(report.MaxConcurrencyDegree >= 2, $"{scenario}: max concurrency degree {report.MaxConcurrencyDegree}: nothing ran concurrently");
    }

    private sealed class Context(string directory, HashSet<string> names) : AssemblyLoadContext("coyote-rewritten")
    {
        protected override Assembly? Load(AssemblyName assemblyName) =>
            assemblyName.Name is { } name && names.Contains(name)
                ? LoadFromAssemblyPath(Path.Combine(directory, name + ".dll"))
                : null;
    }
}

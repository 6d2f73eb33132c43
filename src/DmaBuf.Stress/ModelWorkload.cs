using System.Diagnostics;
using CsCheck;
using DmaBuf.Simulation;

namespace DmaBuf.Stress;

/// <summary>How long and how a <see cref="ModelWorkload.Run"/> runs.</summary>
public sealed class ModelRunOptions
{
    /// <summary>Seed of the run; each program's own CsCheck seed is drawn from it, so a run is reproducible.</summary>
    public ulong Seed { get; init; } = 1;

    /// <summary>Stop after at least this many model operations (teardown steps included).</summary>
    public long Operations { get; init; } = 100_000;

    /// <summary>Also stop when this much wall time has passed; null for no limit.</summary>
    public TimeSpan? TimeBudget { get; init; }

    /// <summary>Most steps per program, before teardown.</summary>
    public int MaxProgramLength { get; init; } = 60;

    /// <summary>Programs CsCheck tries while shrinking a counterexample.</summary>
    public int ShrinkIterations { get; init; } = 10_000;

    /// <summary>
    /// Whether fresh buffers must read as zeros (design rule 12). Off, bytes nobody wrote are not compared: for hunting
    /// other defects on a simulator that does not zero yet.
    /// </summary>
    public bool FreshMemoryZeroed { get; init; } = true;

    /// <summary>The import context modes programs create (both by default).</summary>
    public IReadOnlySet<ImportMappingMode> ImportModes { get; init; } = new HashSet<ImportMappingMode> { ImportMappingMode.PerAttachment, ImportMappingMode.PerAddressSpace };

    /// <summary>Operations left out of the generated programs, to look past one known defect at the others.</summary>
    public IReadOnlySet<ModelOpKind> Exclude { get; init; } = new HashSet<ModelOpKind>();

    /// <summary>Called now and then with the operations run so far, for a progress line.</summary>
    public Action<long>? Progress { get; init; }
}

/// <summary>What a <see cref="ModelWorkload.Run"/> found.</summary>
/// <param name="Operations">Model operations run.</param>
/// <param name="Programs">Programs run.</param>
/// <param name="Seed">The run's seed.</param>
/// <param name="FailingSeed">CsCheck seed of the first failing program, or null.</param>
/// <param name="Violation">The first violation, or null.</param>
/// <param name="Reproduction">The shrunk counterexample: its CsCheck seed and the C# that reproduces it; or null.</param>
public sealed record ModelRunResult(long Operations, long Programs, ulong Seed, string? FailingSeed, string? Violation, string? Reproduction)
{
    /// <summary>Whether every program matched the model.</summary>
    public bool Passed => Violation is null;
}

/// <summary>
/// The model-based workload: random programs over the public API of the framework and the simulated SoC, each step
/// checked against a plain model of what the API promises (<see cref="ModelOpKind"/> lists the steps).
/// </summary>
/// <remarks>
/// <para>After every step: the registry lists exactly the live buffers with the references and attachments the model
/// counts; each heap ran <c>Release</c> once per released buffer; every metadata release callback ran exactly once,
/// for the model's reason; cached mappings and imports are live exactly when the model says; each import context's
/// <see cref="ImportContext.CachedBytes"/> is the bytes of its mapped live imports, each charged once, and a budget
/// only evicts imports not in use; bytes read by a device or the CPU are the bytes last written (fresh memory reads
/// as zeros); no page is leaked, reachable after free or touched after free; no DMA faults.</para>
/// <para>Programs are generated and shrunk by CsCheck: a counterexample is cut down to a short program and printed as
/// the C# calls it made, ready to paste into a test.</para>
/// </remarks>
public static partial class ModelWorkload
{
    // Relative frequencies: enough allocation and teardown to keep a handful of buffers live, the rest spread out.
    private static readonly (ModelOpKind Kind, int Weight)[] s_weights =
    [
        (ModelOpKind.Allocate, 8), (ModelOpKind.Duplicate, 3), (ModelOpKind.DisposeHandle, 6), (ModelOpKind.Attach, 4),
        (ModelOpKind.Detach, 3), (ModelOpKind.Map, 4), (ModelOpKind.Unmap, 3), (ModelOpKind.Pin, 1), (ModelOpKind.Unpin, 1),
        (ModelOpKind.MetadataAdd, 5), (ModelOpKind.MetadataGet, 2), (ModelOpKind.MetadataRemove, 2),
        (ModelOpKind.OwnerTeardown, 1), (ModelOpKind.CachedMapping, 4), (ModelOpKind.CreateContext, 2),
        (ModelOpKind.DisposeContext, 1), (ModelOpKind.Import, 6), (ModelOpKind.ImportMap, 6), (ModelOpKind.EndUse, 4),
        (ModelOpKind.Move, 4), (ModelOpKind.DmaWrite, 5), (ModelOpKind.DmaRead, 5), (ModelOpKind.CpuWrite, 3),
        (ModelOpKind.CpuRead, 4),
    ];

    private static readonly ModelOpKind[] s_kinds = [.. s_weights.SelectMany(w => Enumerable.Repeat(w.Kind, w.Weight))];

    /// <summary>One step: a kind by frequency and four small operands.</summary>
    public static Gen<ModelOp> Operation { get; } =
        Gen.Select(Gen.Int[0, s_kinds.Length - 1], Gen.Int[0, 31], Gen.Int[0, 31], Gen.Int[0, 31], Gen.Int[0, 31],
            (k, a, b, c, d) => new ModelOp(s_kinds[k], a, b, c, d));

    /// <summary>Programs of up to <paramref name="maxLength"/> steps on a SoC of either topology.</summary>
    public static Gen<ModelProgram> Programs(int maxLength) => Programs(maxLength, new HashSet<ModelOpKind>());

    /// <summary>Programs of up to <paramref name="maxLength"/> steps, none of the <paramref name="exclude"/>d kinds.</summary>
    public static Gen<ModelProgram> Programs(int maxLength, IReadOnlySet<ModelOpKind> exclude)
    {
        ArgumentNullException.ThrowIfNull(exclude);
        ModelOpKind[] kinds = [.. s_kinds.Where(k => !exclude.Contains(k))];
        if (kinds.Length == 0)
        {
            throw new ArgumentException("Every operation is excluded.", nameof(exclude));
        }

        Gen<ModelOp> operation = Gen.Select(Gen.Int[0, kinds.Length - 1], Gen.Int[0, 31], Gen.Int[0, 31], Gen.Int[0, 31], Gen.Int[0, 31],
            (k, a, b, c, d) => new ModelOp(kinds[k], a, b, c, d));
        return Gen.Select(Gen.Int[0, 1], Gen.Int[1, 1000], operation.Array[0, maxLength],
            (t, seed, ops) => new ModelProgram(t == 0 ? Topology.Separate : Topology.Shared, seed, ops));
    }

    /// <summary>The bytes a printed reproduction writes in a DMA or CPU write step (never 0, so a lost write cannot look like fresh memory).</summary>
    public static byte[] Pattern(int seed, int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        return ModelMachine.Pattern(seed, length);
    }

    /// <summary>Runs one program, teardown included, and checks it step by step.</summary>
    /// <param name="program">The program.</param>
    /// <param name="options">Which checks and modes apply (<see cref="ModelRunOptions.FreshMemoryZeroed"/>,
    /// <see cref="ModelRunOptions.ImportModes"/>); the defaults when null.</param>
    public static ModelProgramResult RunProgram(ModelProgram program, ModelRunOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(program);
        return ModelMachine.Run(program, options ?? new ModelRunOptions());
    }

    /// <summary>
    /// Runs programs until <see cref="ModelRunOptions.Operations"/> operations or the time budget are used up, or a
    /// program breaks the model; that one is then shrunk by CsCheck and its reproduction returned.
    /// </summary>
    public static ModelRunResult Run(ModelRunOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        Gen<ModelProgram> programs = Programs(options.MaxProgramLength, options.Exclude);
        if (options.ImportModes.Count == 0)
        {
            throw new ArgumentException("At least one import mode is needed.", nameof(options));
        }

        var pcg = new PCG(1, options.Seed);
        var clock = Stopwatch.StartNew();
        long operations = 0, count = 0, lastProgress = 0;
        while (operations < options.Operations && (options.TimeBudget is not { } budget || clock.Elapsed < budget))
        {
            string seed = pcg.ToString();
            ModelProgram program = programs.Generate(pcg, null, out _);
            ModelProgramResult result = ModelMachine.Run(program, options);
            operations += result.Steps;
            count++;
            if (!result.Passed)
            {
                return new ModelRunResult(operations, count, options.Seed, seed, result.Violation, Shrink(programs, seed, options.ShrinkIterations, result, options));
            }

            if (options.Progress is { } progress && operations - lastProgress >= 10_000)
            {
                lastProgress = operations;
                progress(operations);
            }
        }

        return new ModelRunResult(operations, count, options.Seed, null, null, null);
    }

    /// <summary>
    /// Shrinks a failing program to a small one that fails the same way (the same violation up to names and numbers):
    /// first CsCheck, from the program's seed, searching smaller generated programs; then step removal, dropping runs
    /// of steps while the failure stays (operands pick modulo what is alive, so any subsequence is a valid program).
    /// </summary>
    private static string Shrink(Gen<ModelProgram> programs, string seed, int iterations, ModelProgramResult first, ModelRunOptions options)
    {
        string signature = Signature(first.Violation!);
        ModelProgram? smallest = null;
        bool SameFailure(ModelProgram p) => ModelMachine.Run(p, options).Violation is { } v && Signature(v) == signature;
        string csCheck = "";
        try
        {
            programs.Sample(
                p =>
                {
                    if (!SameFailure(p))
                    {
                        return true;
                    }

                    if (smallest is null || p.Ops.Count < smallest.Ops.Count)
                    {
                        smallest = p;
                    }

                    return false;
                },
                seed: seed,
                iter: iterations,
                threads: 1,
                print: p => $"{p.Ops.Count} steps");
        }
        catch (Exception e)
        {
            // CsCheck's report: the seed of its smallest failing program and how hard it shrank.
            csCheck = e.Message.Split('\n').FirstOrDefault(l => l.Contains("seed", StringComparison.OrdinalIgnoreCase))?.Trim() ?? "";
        }

        if (smallest is null)
        {
            return $"Seed {seed} (not reproduced by CsCheck):{Environment.NewLine}{first.Code}";
        }

        List<ModelOp> ops = [.. smallest.Ops];
        for (int chunk = Math.Max(1, ops.Count / 2); chunk >= 1; chunk /= 2)
        {
            for (int start = 0; start + chunk <= ops.Count;)
            {
                List<ModelOp> fewer = [.. ops.Take(start), .. ops.Skip(start + chunk)];
                if (SameFailure(smallest with { Ops = fewer }))
                {
                    ops = fewer;
                }
                else
                {
                    start += chunk;
                }
            }
        }

        ModelProgramResult shrunk = ModelMachine.Run(smallest with { Ops = ops }, options);
        return $"{csCheck}{Environment.NewLine}Shrunk from {first.Steps} to {ops.Count} steps ({shrunk.Steps} with teardown): {shrunk.Violation}{Environment.NewLine}{shrunk.Code}";
    }

    // "h4 has 3 references" and "h17 has 2 references" are one defect; "v2 was released" another.
    private static string Signature(string violation) => SignatureRegex().Replace(violation, "#");

    [System.Text.RegularExpressions.GeneratedRegex(@"\b[a-z]*\d+\b|0x[0-9a-f]+")]
    private static partial System.Text.RegularExpressions.Regex SignatureRegex();
}

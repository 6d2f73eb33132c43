using CsCheck;

namespace DmaBuf.Stress.Tests;

/// <summary>
/// The model-based workload in CI: fixed seeds, so a failure reproduces, and one random seed per run, printed, so
/// runs keep exploring. Together they run <see cref="StressSettings.ModelOperations"/> operations.
/// </summary>
public sealed class ModelWorkloadTests
{
    [Theory]
    [InlineData(1UL)]
    [InlineData(2UL)]
    [InlineData(3UL)]
    public void Run_FixedSeed_MatchesTheModel(ulong seed) => RunAndAssert(seed);

    [Fact]
    public void Run_RandomSeed_MatchesTheModel() => RunAndAssert((ulong)Random.Shared.NextInt64(1, long.MaxValue));

    [Fact]
    public void RunProgram_SameProgram_SameStepsAndCode()
    {
        ModelProgram program = ModelWorkload.Programs(40).Generate(new PCG(1, 7), null, out _);
        ModelProgramResult first = ModelWorkload.RunProgram(program), second = ModelWorkload.RunProgram(program);

        Assert.Equal(first, second);
        Assert.Contains("var soc = new Soc(", first.Code, StringComparison.Ordinal);
    }

    private static void RunAndAssert(ulong seed)
    {
        ModelRunResult result = ModelWorkload.Run(new ModelRunOptions { Seed = seed, Operations = StressSettings.ModelOperations / 4 });
        TestContext.Current.TestOutputHelper?.WriteLine($"seed {seed}: {result.Operations} operations in {result.Programs} programs");
        Assert.True(
            result.Passed,
            $"Model seed {seed} (program seed {result.FailingSeed}): {result.Violation}{Environment.NewLine}{result.Reproduction}");
        Assert.True(result.Operations >= StressSettings.ModelOperations / 4, $"only {result.Operations} operations ran");
    }
}

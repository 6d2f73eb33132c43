namespace DmaBuf.Stress.Tests;

/// <summary>Each race on real threads, a modest number of times: what Coyote explores systematically, tried for real.</summary>
public sealed class RaceThreadTests
{
    public static TheoryData<string> Scenarios { get; } = [.. RaceScenarios.All.Select(s => s.Name)];

    [Theory]
    [MemberData(nameof(Scenarios))]
    public void Race_OnThreads_NoRuleBroken(string scenario)
    {
        Func<Task> run = RaceScenarios.All.Single(s => s.Name == scenario).Run;

        RaceRunResult result = RaceRunner.RunOnThreads(run, StressSettings.ThreadIterations);

        Assert.True(
            result.Passed,
            $"{scenario}: {result.Failures} of {result.Iterations} iterations failed:{Environment.NewLine}{string.Join(Environment.NewLine, result.Messages)}");
        Assert.Equal(StressSettings.ThreadIterations, result.Iterations);
    }
}

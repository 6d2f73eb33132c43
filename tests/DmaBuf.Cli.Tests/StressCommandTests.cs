using System.Text.RegularExpressions;

namespace DmaBuf.Cli.Tests;

public sealed partial class StressCommandTests
{
    private static (int Code, string Out, string Err) Run(params string[] args) => Cli.Run(args);

    [Fact]
    public void Stress_TwoSeconds_RunsTheModelAndEveryRace_NoViolation()
    {
        (int code, string output, string errors) = Run("stress", "--seconds", "2", "--seed", "3");

        Assert.True(code == 0, errors);
        Match summary = SummaryLine().Match(output);
        Assert.True(summary.Success, output);
        Assert.True(long.Parse(summary.Groups["ops"].Value.Replace(",", "", StringComparison.Ordinal), System.Globalization.CultureInfo.InvariantCulture) > 0);
        Assert.Equal("3", summary.Groups["seed"].Value);
        Assert.Equal("12", summary.Groups["races"].Value);
        Assert.Equal("0", summary.Groups["violations"].Value);
        foreach (string race in new[] { "CloseVsReimportPerAttachment", "OwnerTeardownVsRelease", "EvictionVsRelease", "MoveVsMetadataAdd" })
        {
            Assert.Contains(race, output, StringComparison.Ordinal);
        }
    }

    [Theory]
    [InlineData("0")]
    [InlineData("86401")]
    [InlineData("abc")]
    public void Stress_BadSeconds_IsAUsageError(string seconds)
    {
        (int code, _, string errors) = Run("stress", "--seconds", seconds);

        Assert.Equal(2, code);
        Assert.Contains("--seconds", errors, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", errors, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("x")]
    [InlineData("-1")]
    public void Stress_BadSeed_SaysWhatASeedIs(string seed)
    {
        (int code, _, string errors) = Run("stress", "--seed", seed);

        Assert.Equal(2, code);
        Assert.Contains($"--seed '{seed}' is not a whole number", errors, StringComparison.Ordinal);
        Assert.DoesNotContain("System.", errors, StringComparison.Ordinal);
    }

    [GeneratedRegex(@"stress: (?<ops>[\d,]+) model operations \(seed (?<seed>\d+)\), [\d,]+ race iterations over (?<races>\d+) races, (?<violations>\d+) violations")]
    private static partial Regex SummaryLine();
}

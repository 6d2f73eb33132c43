namespace DmaBuf.Cli.Tests;

/// <summary>
/// Red team: text from a scenario file (its "name") reaches Spectre.Console markup. A name with square brackets — as
/// ordinary as "camera[0]" — crashes simulate (Wrap takes the escaped "[[0]]" for a style tag and closes it at the
/// line break) and sweep (the table title is markup and the name is not escaped): an unhandled exception, a stack
/// trace, exit 134. And a name with terminal escape sequences is printed raw.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class ScenarioTextTests
{
    [Theory]
    [InlineData("simulate", "camera[0]")]
    [InlineData("simulate", "a [b] c")]
    [InlineData("sweep", "my]scenario")]
    [InlineData("sweep", "[bogus style]x")]
    public void ScenarioNameWithBrackets_RunsOrIsRefused_NeverThrows(string command, string name)
    {
        string path = ScenarioNamed(name);
        try
        {
            string[] args = command == "sweep"
                ? ["sweep", "--scenario-file", path, "--strategy", "remap", "--vary", "pool=1,2"]
                : ["simulate", "--scenario-file", path, "--strategy", "remap"];
            (int code, string output, string error) = Cli.Run(args);
            Assert.True(code is 0 or 2, $"exit {code}: {error}");
            Assert.Contains(name, output, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void ScenarioNameWithTerminalEscapes_IsNotPrintedRaw()
    {
        string path = ScenarioNamed("evil\u001bc\u0007"); // ESC c: a full terminal reset; no brackets, so the markup bug is not in the way
        try
        {
            (int code, string output, string error) = Cli.Run("simulate", "--scenario-file", path, "--strategy", "remap");
            Assert.True(code is 0 or 2, $"exit {code}: {error}");
            Assert.DoesNotContain('\u001b', output + error);
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>A user's profile file whose path has brackets: the sweep's row label is that path, parsed as markup.</summary>
    [Fact]
    public void SweepOverAProfileFileWhosePathHasBrackets_RunsNeverThrows()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"rt-prof[x]-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            string profile = Path.Combine(dir, "mine.json");
            File.Copy(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "src", "DmaBuf.Simulation", "Profiles", "smmuv3-strict.json"), profile);
            (int code, string output, string error) = Cli.Run(
                "sweep", "playback", "--frames", "2", "--pool", "2", "--strategy", "remap", "--vary", $"profile=smmuv3-strict,{profile}");
            Assert.True(code == 0, $"exit {code}: {error}");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static string ScenarioNamed(string name)
    {
        string path = Path.Combine(Path.GetTempPath(), $"rt-name-{Guid.NewGuid():N}.json");
        string playback = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "scenarios", "playback.json"));
        var doc = System.Text.Json.Nodes.JsonNode.Parse(playback)!.AsObject();
        doc.Remove("$schema");
        doc["name"] = name;
        doc["frames"] = 2;
        doc["pool"] = 2;
        File.WriteAllText(path, doc.ToJsonString());
        return path;
    }
}

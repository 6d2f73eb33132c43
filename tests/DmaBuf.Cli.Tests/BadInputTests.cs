using System.Diagnostics;
using System.Globalization;

namespace DmaBuf.Cli.Tests;

/// <summary>
/// Mistakes a user makes, each found when the command was tried: every one gets one line on stderr that names the
/// problem and the valid choices, exit 2 (usage) or 3 (environment), no stack trace, no internal parameter name, and
/// nothing inside the <c>--json</c> output.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class BadInputTests
{
    /// <summary>Asserts the shape every refusal has, and returns the error line.</summary>
    private static string AssertRefused((int Code, string Out, string Err) run, ExitCode expected, string mustSay)
    {
        Assert.Equal((int)expected, run.Code);
        Assert.Equal("", run.Out);
        string first = run.Err.Split('\n')[0];
        Assert.StartsWith("error: ", first, StringComparison.Ordinal);
        Assert.Contains(mustSay, first, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", run.Err, StringComparison.Ordinal);
        Assert.DoesNotContain("(Parameter '", run.Err, StringComparison.Ordinal);
        Assert.DoesNotContain("Exception", run.Err, StringComparison.Ordinal);
        Assert.DoesNotContain("System.", run.Err, StringComparison.Ordinal);
        return first;
    }

    [Theory]
    [InlineData("abc", "is not a whole number; give one from 1 to 1000000")]
    [InlineData("1e12", "is not a whole number; give one from 1 to 1000000")]
    [InlineData("99999999999", "must be between 1 and 1000000 (got 99999999999)")]
    [InlineData("2147483647", "must be between 1 and 1000000 (got 2147483647)")]
    [InlineData("0", "must be between 1 and 1000000 (got 0)")]
    public void Share_Frames_OutOfRangeOrNotANumber(string value, string expected) =>
        AssertRefused(Cli.Run("share", "--frames", value, "--json"), ExitCode.Usage, expected);

    [Theory]
    [InlineData("abc", "--pool 'abc' is not a whole number; give one from 1 to 256")]
    [InlineData("257", "--pool must be between 1 and 256 (got 257)")]
    public void Share_Pool_OutOfRangeOrNotANumber(string value, string expected) =>
        AssertRefused(Cli.Run("share", "--pool", value, "--json"), ExitCode.Usage, expected);

    [Theory]
    [InlineData("../../etc/passwd")]
    [InlineData("..")]
    [InlineData("")]
    [InlineData("sys tem")]
    public void Share_Heap_ThatIsNotAHeapName(string heap) =>
        AssertRefused(Cli.Run("share", "--exporter", "dma-heap", "--heap", heap, "--json"), ExitCode.Usage, "is not a dma-buf heap name");

    [Fact]
    public void Share_EmptyDrmDriver_SaysWhatANameIs() =>
        AssertRefused(Cli.Run("share", "--exporter", "drm-prime", "--drm-driver", "", "--json"), ExitCode.Usage, "is not a DRM driver name");

    [Theory]
    [InlineData("--heap", "system", "--heap applies only to --exporter dma-heap (the exporter is memfd)")]
    [InlineData("--drm-driver", "vgem", "--drm-driver applies only to --exporter drm-prime (the exporter is memfd)")]
    public void Share_OptionOfAnotherExporter_IsRefusedNotIgnored(string option, string value, string expected) =>
        AssertRefused(Cli.Run("share", option, value, "--json"), ExitCode.Usage, expected);

    [Fact]
    public void Simulate_FramesTooLarge_GivesTheRange() =>
        AssertRefused(Cli.Run("simulate", "playback", "--frames", "99999999999", "--json"), ExitCode.Usage, "--frames must be between 1 and 10000000");

    [Fact]
    public void Simulate_ZeroCacheBudget_SaysItMustBePositive() =>
        AssertRefused(Cli.Run("simulate", "playback", "--cache-budget", "0", "--json"), ExitCode.Usage, "--cache-budget must be larger than 0");

    [Fact]
    public void Chart_InAMissingDirectory_IsRefusedBeforeTheRun() =>
        AssertRefused(Cli.Run("simulate", "playback", "--chart", "/nonexistent-dir/c.svg", "--json"), ExitCode.Usage, "does not exist");

    [Fact]
    public void Chart_UnderProc_CannotBeWritten() =>
        AssertRefused(Cli.Run("simulate", "playback", "--chart", "/proc/dmabuf-chart.svg", "--json"), ExitCode.Usage, "cannot be written");

    [Fact]
    public void Chart_ThatIsADirectory_IsRefused() =>
        AssertRefused(Cli.Run("simulate", "playback", "--chart", Path.GetTempPath(), "--json"), ExitCode.Usage, "is a directory");

    [Fact]
    public void Chart_InAReadOnlyDirectory_CannotBeWritten_AndSweepChecksToo()
    {
        string dir = Directory.CreateTempSubdirectory("dmabuf-ro-").FullName;
        try
        {
            File.SetUnixFileMode(dir, UnixFileMode.UserRead | UnixFileMode.UserExecute);
            string path = Path.Combine(dir, "c.png");
            if (SimulateCommand.CannotWrite(path) is null)
            {
                Assert.Skip("This user writes into read-only directories (root): /proc covers the refusal.");
            }

            AssertRefused(Cli.Run("sweep", "playback", "--vary", "pool=2,4", "--chart", path, "--json"), ExitCode.Usage, "permission denied");
        }
        finally
        {
            File.SetUnixFileMode(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Chart_Check_LeavesNoFileBehind()
    {
        string path = Path.Combine(Path.GetTempPath(), $"dmabuf-probe-{Guid.NewGuid():N}.svg");
        Assert.Null(SimulateCommand.CannotWrite(path));
        Assert.False(File.Exists(path));
    }

    [Theory]
    [InlineData("pteWriteNs", "1000000000000000", "parameter 'pteWriteNs' is 1000000000000000; the largest accepted is 1000000000")]
    [InlineData("mapCallNs", "1e18", "parameter 'mapCallNs' is 1e18; the largest accepted is 1000000000")]
    [InlineData("mapCallNs", "9e18", "parameter 'mapCallNs' is 9e18; the largest accepted is 1000000000")]
    [InlineData("iotlbEntries", "99999999", "parameter 'iotlbEntries' is 99999999; the largest accepted is 1048576")]
    public void Profile_ValueThatWouldOverflow_IsRefusedWithItsBound(string parameter, string value, string expected)
    {
        string path = WriteProfile(parameter, value);
        try
        {
            AssertRefused(Cli.Run("simulate", "playback", "--profile", path, "--json"), ExitCode.Usage, expected);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Profile_AtItsBounds_RunsWithTimesThatNeverWrap()
    {
        string path = WriteProfile("pteWriteNs", "1000000000");
        try
        {
            (int code, string output, _) = Cli.Run("simulate", "playback", "--profile", path, "--frames", "4", "--pool", "2", "--strategy", "remap", "--json");

            Assert.Equal(0, code);
            using var doc = System.Text.Json.JsonDocument.Parse(output);
            long mapping = doc.RootElement.GetProperty("results")[0].GetProperty("simulated").GetProperty("mappingNs").GetInt64();
            Assert.True(mapping > 0, $"mapping time {mapping} wrapped");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Profile_ThatIsADirectory_SaysSo() =>
        AssertRefused(Cli.Run("simulate", "playback", "--profile", Path.GetTempPath(), "--json"), ExitCode.Usage, "is a directory");

    [Fact]
    public void Profile_BrokenJson_GivesLineAndColumn_NotTheSerializersWords()
    {
        string path = Path.Combine(Path.GetTempPath(), $"dmabuf-profile-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, "{\"name\": \"x\",\n \"defaultMode\": \"strict\" \"parameters\": {}}");
        string wrongType = Path.Combine(Path.GetTempPath(), $"dmabuf-profile-{Guid.NewGuid():N}.json");
        File.WriteAllText(wrongType, "{\"name\": 3, \"defaultMode\": \"strict\", \"parameters\": {}}");
        try
        {
            string line = AssertRefused(Cli.Run("simulate", "playback", "--profile", path, "--json"), ExitCode.Usage, "at line 2, column 26");
            Assert.DoesNotContain("LineNumber", line, StringComparison.Ordinal);
            AssertRefused(Cli.Run("simulate", "playback", "--profile", wrongType, "--json"), ExitCode.Usage, "($.name) expected a string");
        }
        finally
        {
            File.Delete(path);
            File.Delete(wrongType);
        }
    }

    [Fact]
    public void Pool_ThatCannotFitTheMachine_IsRefusedWithTheEstimate()
    {
        string line = AssertRefused(
            Cli.Run("simulate", "playback", "--pool", "4096", "--max-memory", "8G", "--json"), ExitCode.FeatureMissing, "This run needs about ");
        Assert.Contains("the --max-memory limit is 8 GiB", line, StringComparison.Ordinal);
        Assert.Contains("Lower --pool or --resolution", line, StringComparison.Ordinal);
    }

    [Fact]
    public void HugeFrames_AreRefusedAgainstHalfTheMachine_AndInASweep()
    {
        string line = AssertRefused(
            Cli.Run("simulate", "playback", "--resolution", "16384x16384", "--pool", "200", "--json"), ExitCode.FeatureMissing, "16384x16384 NV12");
        Assert.Contains("half of the", line, StringComparison.Ordinal);
        AssertRefused(Cli.Run("sweep", "playback", "--vary", "pool=2,16384", "--resolution", "4k", "--json"), ExitCode.FeatureMissing, "16384 buffers");
    }

    [Fact]
    public void MemoryEstimate_GrowsWithThePoolAndTheFrame()
    {
        Simulation.Scenario playback = Simulation.Scenario.Load("playback");
        Simulation.ScenarioOptions small = playback.DefaultOptions();
        long at20 = playback.EstimateHostBytes(small);
        long at40 = playback.EstimateHostBytes(new Simulation.ScenarioOptions { Pool = 40, Resolution = small.Resolution });
        long at4k = playback.EstimateHostBytes(new Simulation.ScenarioOptions { Pool = 20, Resolution = Simulation.Resolution.Parse("4k") });

        // 20 1080p NV12 frames are 62 MB of bytes; twice that and the base keep the estimate near the measured 400 MB.
        Assert.InRange(at20, 300L << 20, 600L << 20);
        Assert.True(at40 > at20 && at4k > at20 * 1.5, $"{at20} {at40} {at4k}");
    }

    [Fact]
    public void FullDisk_GivesOneLineAndExitThree()
    {
        (int code, string err) = RunProcess("exec \"$0\" \"$@\" simulate playback --frames 4 --pool 2 --json >/dev/full");

        Assert.Equal((int)ExitCode.FeatureMissing, code);
        Assert.StartsWith("error: cannot write the output: No space left on device", err, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", err, StringComparison.Ordinal);
    }

    [Fact]
    public void ClosedStdout_GivesOneLineAndExitThree()
    {
        (int code, string err) = RunProcess("exec \"$0\" \"$@\" simulate playback --frames 4 --pool 2 >&-");

        Assert.Equal((int)ExitCode.FeatureMissing, code);
        Assert.StartsWith("error: cannot write the output:", err, StringComparison.Ordinal);
        Assert.Contains("standard output closed", err, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", err, StringComparison.Ordinal);
    }

    [Fact]
    public void CtrlC_DuringTheProgressBars_ShowsTheCursorAgain()
    {
        if (!File.Exists("/usr/bin/script"))
        {
            Assert.Skip("script(1) (util-linux) gives the command a terminal; it is not installed.");
        }

        // script(1) gives the command a pseudo-terminal, so the progress bars are drawn and the cursor hidden.
        string command = $"exec {Quote(Dotnet)} {Quote(CliDll)} simulate playback --frames 1000000";
        var info = new ProcessStartInfo("/usr/bin/script") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in new[] { "-qfec", command, "/dev/null" })
        {
            info.ArgumentList.Add(a);
        }

        using Process script = Process.Start(info)!;
        var output = new System.Text.StringBuilder();
        script.OutputDataReceived += (_, e) =>
        {
            lock (output)
            {
                output.Append(e.Data).Append('\n');
            }
        };
        script.BeginOutputReadLine();
        try
        {
            int cli = WaitForChild(script.Id, TimeSpan.FromSeconds(60));
            var until = DateTime.UtcNow + TimeSpan.FromSeconds(60);
            while (DateTime.UtcNow < until && !Snapshot(output).Contains('%', StringComparison.Ordinal))
            {
                Thread.Sleep(50);
            }

            Assert.Contains("\u001b[?25l", Snapshot(output), StringComparison.Ordinal); // the bars hid the cursor
            Assert.Equal(0, Kill(cli, 2)); // SIGINT, as the terminal sends for Ctrl-C
            Assert.True(script.WaitForExit(30_000), "the command did not end after Ctrl-C");
            script.WaitForExit();
        }
        finally
        {
            if (!script.HasExited)
            {
                script.Kill(entireProcessTree: true);
            }
        }

        string text = Snapshot(output);
        int hidden = text.LastIndexOf("\u001b[?25l", StringComparison.Ordinal);
        int shown = text.LastIndexOf("\u001b[?25h", StringComparison.Ordinal);
        Assert.True(shown > hidden, $"the cursor was hidden at {hidden} and last shown at {shown}");
    }

    private static string Snapshot(System.Text.StringBuilder output)
    {
        lock (output)
        {
            return output.ToString();
        }
    }

    private static string Dotnet => Environment.ProcessPath is { } p && Path.GetFileNameWithoutExtension(p) == "dotnet" ? p : "dotnet";

    private static string CliDll => Path.Combine(AppContext.BaseDirectory, "DmaBuf.Cli.dll");

    private static string Quote(string s) => "'" + s.Replace("'", "'\\''", StringComparison.Ordinal) + "'";

    /// <summary>Runs <c>sh -c SCRIPT dotnet DmaBuf.Cli.dll</c>: the script redirects the command's output as a shell would.</summary>
    private static (int Code, string Err) RunProcess(string script)
    {
        var info = new ProcessStartInfo("/bin/sh") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (string a in new[] { "-c", script, Dotnet, CliDll })
        {
            info.ArgumentList.Add(a);
        }

        using Process p = Process.Start(info)!;
        string err = p.StandardError.ReadToEnd();
        p.StandardOutput.ReadToEnd();
        Assert.True(p.WaitForExit(120_000));
        return (p.ExitCode, err);
    }

    private static int WaitForChild(int parent, TimeSpan patience)
    {
        var until = DateTime.UtcNow + patience;
        while (DateTime.UtcNow < until)
        {
            foreach (string task in Directory.EnumerateDirectories($"/proc/{parent}/task"))
            {
                string children = File.ReadAllText(Path.Combine(task, "children")).Trim();
                if (children.Length > 0)
                {
                    return int.Parse(children.Split(' ')[0], CultureInfo.InvariantCulture);
                }
            }

            Thread.Sleep(20);
        }

        throw new TimeoutException("script(1) did not start the command");
    }

    private static string WriteProfile(string parameter, string value)
    {
        string text = Simulation.CostProfile.Load("smmuv3-strict").Parameters
            .Aggregate("{\"name\": \"bounds\", \"defaultMode\": \"strict\", \"parameters\": {", (acc, p) =>
                acc + $"\"{p.Name}\": {{\"value\": {(p.Name == parameter ? value : p.IsFlag ? (p.Value != 0 ? "true" : "false") : p.Value.ToString(CultureInfo.InvariantCulture))}, \"source\": \"test\"}},")
            .TrimEnd(',') + "}}";
        string path = Path.Combine(Path.GetTempPath(), $"dmabuf-profile-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, text);
        return path;
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int signal);
}

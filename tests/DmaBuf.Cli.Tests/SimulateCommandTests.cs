using System.Text.Json;

namespace DmaBuf.Cli.Tests;

public sealed class SimulateCommandTests
{
    private static (int Code, string Out, string Err) Run(params string[] args) => Cli.Run(args);

    private static JsonElement Result(JsonDocument doc, string strategy) =>
        doc.RootElement.GetProperty("results").EnumerateArray().Single(r => r.GetProperty("strategy").GetString() == strategy);

    [Fact]
    public void Json_RemapAndKeepAttachment_CountsMatchTheModel()
    {
        (int code, string output, _) = Run(
            "simulate", "playback", "--strategy", "remap", "--strategy", "keep-attachment", "--frames", "120", "--pool", "16", "--json");

        Assert.Equal(0, code);
        using JsonDocument doc = JsonDocument.Parse(output);
        Assert.Equal("playback", doc.RootElement.GetProperty("scenario").GetString());
        JsonElement remap = Result(doc, "remap");
        JsonElement keep = Result(doc, "keep-attachment");
        Assert.Equal(3, remap.GetProperty("importers").GetInt32());
        Assert.Equal(120 * 3, remap.GetProperty("counters").GetProperty("mapCalls").GetInt64());
        Assert.Equal(120 * 3, remap.GetProperty("counters").GetProperty("unmapCalls").GetInt64());
        Assert.Equal(16 * 3, keep.GetProperty("counters").GetProperty("mapCalls").GetInt64());
        foreach (JsonElement r in new[] { remap, keep })
        {
            JsonElement safety = r.GetProperty("safety");
            Assert.Equal(120, safety.GetProperty("framesVerified").GetInt64());
            Assert.Equal(0, safety.GetProperty("dmaFaults").GetInt64());
            Assert.Equal(0, safety.GetProperty("staleReads").GetInt64());
            Assert.Equal(0, safety.GetProperty("freedPageAccesses").GetInt64());
            Assert.Equal(0, safety.GetProperty("leakedPages").GetInt64());
        }

        Assert.True(remap.GetProperty("simulated").GetProperty("mappingNs").GetInt64() >
                    keep.GetProperty("simulated").GetProperty("mappingNs").GetInt64());
    }

    [Fact]
    public void Json_HasEveryDocumentedField()
    {
        (int code, string output, _) = Run("simulate", "playback", "--strategy", "remap", "--frames", "4", "--pool", "2", "--json");

        Assert.Equal(0, code);
        using JsonDocument doc = JsonDocument.Parse(output);
        JsonElement r = Result(doc, "remap");
        foreach (string f in new[] { "strategy", "frames", "pool", "importers", "counters", "simulated", "safety", "wallSeconds" })
        {
            Assert.True(r.TryGetProperty(f, out _), f);
        }

        foreach (string f in new[] { "mapCalls", "unmapCalls", "pagesMapped", "iotlbInvalidations", "iovaAllocs", "chainsBuilt", "cacheHits", "cacheMisses", "cacheEvictions" })
        {
            Assert.True(r.GetProperty("counters").TryGetProperty(f, out _), f);
        }

        Assert.True(r.GetProperty("simulated").TryGetProperty("mappingNs", out _));
        Assert.True(r.GetProperty("simulated").TryGetProperty("mappingNsPerFrame", out _));
        foreach (string f in new[] { "framesVerified", "dmaFaults", "staleReads", "freedPageAccesses", "leakedPages" })
        {
            Assert.True(r.GetProperty("safety").TryGetProperty(f, out _), f);
        }
    }

    [Fact]
    public void SameCommandTwice_GivesIdenticalCountersAndTimes()
    {
        string[] args = ["simulate", "playback", "--frames", "40", "--pool", "8", "--iommu", "lazy", "--json"];
        (_, string first, _) = Run(args);
        (_, string second, _) = Run(args);

        static string Strip(string json)
        {
            using JsonDocument doc = JsonDocument.Parse(json);
            return string.Join("|", doc.RootElement.GetProperty("results").EnumerateArray().Select(r =>
                r.GetProperty("counters").GetRawText() + r.GetProperty("simulated").GetRawText() + r.GetProperty("safety").GetRawText()));
        }

        Assert.Equal(Strip(first), Strip(second));
    }

    [Fact]
    public void Table_ShowsEveryStrategySideBySide()
    {
        (int code, string output, _) = Run("simulate", "playback", "--frames", "10", "--pool", "4");

        Assert.Equal(0, code);
        foreach (string strategy in new[] { "remap", "keep-attachment", "meta", "exporter-cache", "domain-share" })
        {
            Assert.Contains(strategy, output);
        }

        Assert.Contains("map time", output);
        Assert.All(output.Split('\n'), line => Assert.True(line.TrimEnd().Length <= 80, $"wider than 80 columns: '{line}'"));
    }

    [Fact]
    public void Table_TellsTheStory_BaselineCeilingVerdictAndSafety()
    {
        (int code, string output, _) = Run("simulate", "playback", "--frames", "120", "--pool", "20", "--topology", "shared");

        Assert.Equal(0, code);
        string text = string.Join(' ', output.Split('\n', StringSplitOptions.TrimEntries)); // the lines are wrapped at 80
        Assert.Contains("baseline", text, StringComparison.Ordinal);
        Assert.Contains("6.0× less", text, StringComparison.Ordinal); // keep-attachment: 120 ÷ 20
        Assert.Contains("frames ÷ pool = 120 ÷ 20 = 6.0×", text, StringComparison.Ordinal);
        Assert.Contains("Verdict: domain-share wins: 18.0× less mapping time per frame than remap", text, StringComparison.Ordinal);
        Assert.Contains("Safety held for every strategy: 120 frames verified", text, StringComparison.Ordinal);
        Assert.Contains("Times are simulated", text, StringComparison.Ordinal);
        Assert.DoesNotContain("1.0× less", text, StringComparison.Ordinal); // remap is not compared with itself
    }

    [Fact]
    public void Table_OneStrategy_ComparesWithNothing_AndAFailedCheckSaysSo()
    {
        (int code, string output, _) = Run("simulate", "playback", "--frames", "24", "--strategy", "keep-attachment", "--no-fences");

        Assert.Equal(1, code);
        string text = string.Join(' ', output.Split('\n', StringSplitOptions.TrimEntries));
        Assert.DoesNotContain("vs remap", text, StringComparison.Ordinal);
        Assert.Contains("remap did not run", text, StringComparison.Ordinal);
        Assert.Contains("Safety FAILED for keep-attachment", text, StringComparison.Ordinal);
        Assert.Contains("FAILED", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Strategy_TakesSeveralValuesAfterOneOption()
    {
        (int code, string output, _) = Run("simulate", "playback", "--frames", "8", "--pool", "4", "--strategy", "remap", "meta", "--json");

        Assert.Equal(0, code);
        using JsonDocument doc = JsonDocument.Parse(output);
        Assert.Equal(["remap", "meta"], doc.RootElement.GetProperty("results").EnumerateArray().Select(r => r.GetProperty("strategy").GetString()));
    }

    [Theory]
    [InlineData("I ran [bold]the[/] tests today and they passed", 12)]
    [InlineData("[green]Safety held[/] for every strategy: 600 frames verified", 20)]
    [InlineData("word", 2)]
    public void Wrap_KeepsLinesWithinTheWidth_AndMarkupValid(string markup, int width)
    {
        string[] lines = [.. SimulateCommand.Wrap(markup, width)];

        Assert.All(lines, l => Assert.True(Spectre.Console.Markup.Remove(l).Length <= Math.Max(width, 4), l));
        Assert.All(lines, l => _ = new Spectre.Console.Markup(l)); // parses: every opened style is closed on its line
        Assert.Equal(Spectre.Console.Markup.Remove(markup), string.Join(' ', lines.Select(Spectre.Console.Markup.Remove)));
    }

    [Theory]
    [InlineData("--strategy", "bogus", "remap")]
    [InlineData("--frames", "0", "--frames")]
    [InlineData("--frames", "many", "many")]
    [InlineData("--pool", "-1", "--pool")]
    [InlineData("--resolution", "1081x7", "even")]
    [InlineData("--resolution", "huge", "1080p, 4k or WxH")]
    [InlineData("--topology", "mesh", "separate")]
    [InlineData("--iommu", "sometimes", "strict")]
    [InlineData("--profile", "no-such-profile", "smmuv3-strict")]
    public void BadOption_ExitsTwoWithAMessageNamingTheChoices(string option, string value, string expected)
    {
        (int code, string output, string error) = Run("simulate", "playback", option, value);

        Assert.Equal(2, code);
        string all = output + error;
        Assert.Contains(expected, all);
        Assert.DoesNotContain("   at ", all);
    }

    [Theory]
    [InlineData("chart.png")]
    [InlineData("chart.svg")]
    public void Chart_WritesTheFile(string name)
    {
        string path = Path.Combine(Path.GetTempPath(), $"dmabuf-{Guid.NewGuid():N}-{name}");
        try
        {
            (int code, _, _) = Run("simulate", "playback", "--frames", "8", "--pool", "4", "--chart", path, "--json");

            Assert.Equal(0, code);
            byte[] bytes = File.ReadAllBytes(path);
            Assert.True(bytes.Length > 1000);
            if (name.EndsWith(".png", StringComparison.Ordinal))
            {
                Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, bytes[..4]);
            }
            else
            {
                string svg = System.Text.Encoding.UTF8.GetString(bytes);
                Assert.StartsWith("<svg", svg, StringComparison.Ordinal);
                Assert.Contains("domain-share", svg);
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void CacheBudget_SmallerThanPool_PrintsThrashWarning()
    {
        (int code, string output, _) = Run("simulate", "playback", "--strategy", "exporter-cache", "--frames", "40", "--pool", "8",
            "--resolution", "640x360", "--cache-budget", "1M");

        Assert.Equal(0, code);
        Assert.Contains("thrashes", output);
    }

    [Theory]
    [InlineData("camera")]
    [InlineData("churn")]
    public void OtherScenarios_RunEveryStrategySafely(string scenario)
    {
        (int code, string output, _) = Run("simulate", scenario, "--frames", "30", "--pool", "5", "--resolution", "640x360", "--json");

        Assert.Equal(0, code);
        using JsonDocument doc = JsonDocument.Parse(output);
        Assert.Equal(5, doc.RootElement.GetProperty("results").GetArrayLength());
        foreach (JsonElement r in doc.RootElement.GetProperty("results").EnumerateArray())
        {
            Assert.Equal(30, r.GetProperty("safety").GetProperty("framesVerified").GetInt64());
        }
    }

    [Theory]
    [InlineData("--cache-budget", "lots", "K, M or G")]
    [InlineData("--chart", "out.gif", ".png or .svg")]
    public void BadNewOptions_ExitTwo(string option, string value, string expected)
    {
        (int code, string output, string error) = Run("simulate", "playback", option, value);

        Assert.Equal(2, code);
        Assert.Contains(expected, output + error);
    }

    [Fact]
    public void NoSync_ReportsStaleReadsAndExitsOne_SyncIsClean()
    {
        (int syncCode, string syncOut, _) = Run("simulate", "playback", "--frames", "60", "--pool", "8", "--json");
        (int code, string output, string error) = Run("simulate", "playback", "--frames", "60", "--pool", "8", "--no-sync", "--json");

        Assert.Equal(0, syncCode);
        using (JsonDocument doc = JsonDocument.Parse(syncOut))
        {
            Assert.All(doc.RootElement.GetProperty("results").EnumerateArray(),
                r => Assert.Equal(0, r.GetProperty("safety").GetProperty("staleReads").GetInt64()));
        }

        Assert.Equal(1, code);
        Assert.Contains("safety check failed", error);
        using JsonDocument noSync = JsonDocument.Parse(output);
        Assert.All(noSync.RootElement.GetProperty("results").EnumerateArray(),
            r => Assert.True(r.GetProperty("safety").GetProperty("staleReads").GetInt64() > 0));
    }

    [Fact]
    public void UnknownScenario_ExitsTwo()
    {
        (int code, _, string error) = Run("simulate", "karaoke");

        Assert.Equal(2, code);
        Assert.Contains("playback", error);
    }
}

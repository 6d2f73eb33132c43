using System.Text.Json;

namespace DmaBuf.Cli.Tests;

public sealed class SweepCommandTests
{
    private static (int Code, string Out, string Err) Run(params string[] args) => Cli.Run(args);

    [Fact]
    public void Pool_RemapMapsEveryFrame_KeepAttachmentEachBufferOnce_AtEveryPoint()
    {
        (int code, string output, string error) = Run("sweep", "playback", "--vary", "pool=4,8,16", "--frames", "48", "--strategy", "remap", "keep-attachment", "--json");

        Assert.True(code == 0, error);
        using JsonDocument doc = JsonDocument.Parse(output);
        Assert.Equal("pool", doc.RootElement.GetProperty("vary").GetString());
        JsonElement[] points = [.. doc.RootElement.GetProperty("points").EnumerateArray()];
        Assert.Equal(["4", "8", "16"], points.Select(p => p.GetProperty("value").GetString()));
        foreach (JsonElement p in points)
        {
            int pool = int.Parse(p.GetProperty("value").GetString()!, System.Globalization.CultureInfo.InvariantCulture);
            JsonElement[] results = [.. p.GetProperty("results").EnumerateArray()];
            Assert.Equal(48 * 3, results[0].GetProperty("counters").GetProperty("mapCalls").GetInt64());
            Assert.Equal(pool * 3, results[1].GetProperty("counters").GetProperty("mapCalls").GetInt64());
            Assert.All(results, r => Assert.Equal(pool, r.GetProperty("pool").GetInt32()));
        }
    }

    [Fact]
    public void Iommu_Sweep_ShowsTheTableAndTheChart()
    {
        string chart = Path.Combine(Path.GetTempPath(), $"dmabuf-sweep-{Guid.NewGuid():N}.png");
        try
        {
            (int code, string output, string error) = Run("sweep", "camera", "--vary", "iommu=strict,lazy", "--frames", "24", "--chart", chart);

            Assert.True(code == 0, error);
            Assert.Contains("strict", output, StringComparison.Ordinal);
            Assert.Contains("lazy", output, StringComparison.Ordinal);
            Assert.Contains("held", output, StringComparison.Ordinal);
            Assert.True(new FileInfo(chart).Length > 1000);
        }
        finally
        {
            File.Delete(chart);
        }
    }

    [Theory]
    [InlineData("pool", "must be NAME=V1,V2")]
    [InlineData("colour=red", "valid: pool, resolution")]
    [InlineData("pool=", "at least one value")]
    [InlineData("pool=4,x", "'x' is not a whole number")]
    [InlineData("pool=4,4", "repeated")]
    [InlineData("iommu=strict,loose", "valid: strict, lazy, linux-lazy")]
    [InlineData("cache-budget=0", "not a size")]
    [InlineData("resolution=4k,huge", "Resolution 'huge'")]
    public void BadVary_ExitsTwo_NamingTheProblem(string vary, string expected)
    {
        (int code, string output, string error) = Run("sweep", "playback", "--vary", vary);

        Assert.Equal(2, code);
        Assert.Equal("", output);
        Assert.Contains(expected, error, StringComparison.Ordinal);
    }

    [Fact]
    public void Consumers_BeyondTheScenario_IsAUsageError()
    {
        (int code, _, string error) = Run("sweep", "playback", "--vary", "consumers=1,2,3", "--frames", "12");

        Assert.Equal(2, code);
        Assert.Contains("has 2 consumers", error, StringComparison.Ordinal);
    }
}

public sealed class RogueDeviceTests
{
    private static (int Code, JsonElement Result, string Err) Run(string mode, string strategy)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = DmaBufCommand.Run(["simulate", "playback", "--frames", "60", "--pool", "6", "--iommu", mode, "--rogue-device", "--strategy", strategy, "--json"], stdout, stderr);
        using JsonDocument doc = JsonDocument.Parse(stdout.ToString());
        return (code, doc.RootElement.GetProperty("results")[0].Clone(), stderr.ToString());
    }

    [Fact]
    public void LinuxLazy_TheRogueReachesFreedPages_InTheFlushWindow_AndTheRunFails()
    {
        (int code, JsonElement r, string error) = Run("linux-lazy", "keep-attachment");
        JsonElement rogue = r.GetProperty("rogue");

        Assert.Equal(1, code);
        Assert.True(rogue.GetProperty("freedPageAccesses").GetInt64() > 0, rogue.ToString());
        Assert.True(rogue.GetProperty("bytesReachableAfterFree").GetInt64() > 0);
        Assert.True(r.GetProperty("safety").GetProperty("freedPageAccesses").GetInt64() > 0);
        Assert.True(rogue.GetProperty("windowMaxNs").GetInt64() > 0);
        Assert.Contains("freedPageAccesses", error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("lazy")]
    [InlineData("strict")]
    public void LazyAndStrict_TheRogueNeverReachesFreedMemory(string mode)
    {
        foreach (string strategy in new[] { "remap", "keep-attachment" })
        {
            (int code, JsonElement r, string error) = Run(mode, strategy);
            JsonElement rogue = r.GetProperty("rogue");

            Assert.True(code == 0, error);
            Assert.True(rogue.GetProperty("accesses").GetInt64() > 0);
            Assert.Equal(0, rogue.GetProperty("freedPageAccesses").GetInt64());
            Assert.Equal(0, r.GetProperty("safety").GetProperty("freedPageAccesses").GetInt64());
            if (mode == "strict")
            {
                // Strict invalidates before unmap returns: nothing is left to reach, the window is 0.
                Assert.Equal(rogue.GetProperty("accesses").GetInt64(), rogue.GetProperty("blocked").GetInt64());
                Assert.Equal(0, rogue.GetProperty("windowMaxNs").GetInt64());
            }
            else
            {
                // Lazy: stale IOTLB entries still translate until the flush, but only to pages still held.
                Assert.True(rogue.GetProperty("reached").GetInt64() > 0);
                Assert.True(rogue.GetProperty("windowMaxNs").GetInt64() > 0);
            }
        }
    }

    [Fact]
    public void Without_TheOption_ThereIsNoRogueReport()
    {
        var stdout = new StringWriter();
        int code = DmaBufCommand.Run(["simulate", "playback", "--frames", "12", "--strategy", "remap", "--json"], stdout, new StringWriter());
        using JsonDocument doc = JsonDocument.Parse(stdout.ToString());

        Assert.Equal(0, code);
        Assert.Equal(JsonValueKind.Null, doc.RootElement.GetProperty("results")[0].GetProperty("rogue").ValueKind);
    }
}

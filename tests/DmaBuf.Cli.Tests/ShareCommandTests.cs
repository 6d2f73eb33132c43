using System.Text.Json;
using DmaBuf.Linux;

namespace DmaBuf.Cli.Tests;

/// <summary>
/// <c>dmabuf share</c> end to end: a real consumer process, small runs. Figures are not asserted here (the command's
/// measured comparison is where speed belongs); correctness, leaks, exit codes and messages are.
/// </summary>
[Collection(DescriptorCollection.Name)]
public sealed class ShareCommandTests
{
    [Fact]
    public void Share_Json_VerifiesEveryFrameInEveryWay_AndLeaksNothing()
    {
        (int code, string output, string errors) = Run("share", "--frames", "24", "--pool", "4", "--json");

        Assert.True(code == 0, errors);
        using JsonDocument doc = JsonDocument.Parse(output);
        JsonElement r = doc.RootElement;
        Assert.Equal(24, r.GetProperty("framesVerified").GetInt32());
        Assert.Equal(24, r.GetProperty("remapFramesVerified").GetInt32());
        Assert.Equal(24, r.GetProperty("copyFramesVerified").GetInt32());
        Assert.Equal(0, r.GetProperty("framesFailed").GetInt32());
        Assert.Equal(0, r.GetProperty("leakedFds").GetInt32());
        Assert.Equal(4 + 1 + 24, r.GetProperty("descriptorsSent").GetInt64()); // once per pool frame, the floor's page, every re-map
        JsonElement cache = r.GetProperty("consumerMappingCache");
        // The channel maps each pool buffer once when it is registered (4 misses), and every handoff, the pool's first
        // round included, reads through that registration's mapping (ReceivedBuffer.Frame) without asking the cache.
        // The shared-memory floor's page is mapped once at registration and once by its answerer (1 miss, 1 hit);
        // every re-mapped frame is a new import, so a miss (24).
        Assert.Equal(1, cache.GetProperty("hits").GetInt64());
        Assert.Equal(4 + 1 + 24, cache.GetProperty("misses").GetInt64());
        Assert.Equal(0, cache.GetProperty("liveMappingsAtEnd").GetInt32());
        foreach (string field in new[] { "handoffP50Us", "handoffP99Us", "socketRoundTripP50Us", "copyP50Us", "remapP50Us" })
        {
            Assert.True(r.GetProperty(field).GetDouble() > 0, field);
        }
    }

    [Theory]
    [InlineData("spin")]
    [InlineData("block")]
    [InlineData("hybrid")]
    public void Share_Ring_VerifiesEveryFrameOverTheRing_SideBySide_AndLeaksNothing(string wait)
    {
        (int code, string output, string errors) = Run("share", "--frames", "24", "--pool", "4", "--transport", "ring", "--wait", wait, "--json");

        Assert.True(code == 0, errors);
        using JsonDocument doc = JsonDocument.Parse(output);
        JsonElement r = doc.RootElement;
        Assert.Equal("ring", r.GetProperty("transport").GetString());
        Assert.Equal(24, r.GetProperty("framesVerified").GetInt32());
        Assert.Equal(24, r.GetProperty("ringFramesVerified").GetInt32());
        Assert.Equal(0, r.GetProperty("leakedFds").GetInt32());
        Assert.Equal(4 + 1 + 24 + 4, r.GetProperty("descriptorsSent").GetInt64()); // the ring channel sends each pool frame's once too
        Assert.Equal(wait, r.GetProperty("ring").GetProperty("wait").GetString());
        foreach (string field in new[] { "ringHandoffP50Us", "ringHandoffP99Us", "sharedMemoryRoundTripP50Us", "sharedMemoryRoundTripInRhythmP50Us", "firstSendP50Us", "socketRoundTripIdleP50Us" })
        {
            Assert.True(r.GetProperty(field).GetDouble() > 0, field);
        }

        Assert.True(r.GetProperty("ring").GetProperty("ringVsSharedMemoryInRhythm").GetDouble() > 0);
        Assert.True(r.GetProperty("consumerCpuUsPerFrame").GetProperty("ring").GetDouble() > 0);
    }

    [Fact]
    public void Share_Socket_ReportsNoRingFigures()
    {
        (int code, string output, string errors) = Run("share", "--frames", "6", "--pool", "2", "--json");

        Assert.True(code == 0, errors);
        using JsonDocument doc = JsonDocument.Parse(output);
        Assert.Equal(JsonValueKind.Null, doc.RootElement.GetProperty("ringHandoffP50Us").ValueKind);
        Assert.Equal(JsonValueKind.Null, doc.RootElement.GetProperty("consumerCpuUsPerFrame").GetProperty("ring").ValueKind);
    }

    [Fact]
    public void Share_UnknownWait_IsBadUsageNamingTheChoices()
    {
        (int code, _, string errors) = Run("share", "--transport", "ring", "--wait", "doze");

        Assert.Equal((int)ExitCode.Usage, code);
        Assert.Contains("doze", errors, StringComparison.Ordinal);
        Assert.Contains("hybrid", errors, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", errors, StringComparison.Ordinal);
    }

    [Fact]
    public void Share_Table_ShowsEachWayAndTheVerdicts()
    {
        (int code, string output, string errors) = Run("share", "--frames", "8", "--pool", "2");

        Assert.True(code == 0, errors);
        Assert.Contains("zero-copy handoff", output, StringComparison.Ordinal);
        Assert.Contains("bare socket round trip", output, StringComparison.Ordinal);
        Assert.Contains("copy through a Unix stream socket", output, StringComparison.Ordinal);
        Assert.Contains("re-map every frame", output, StringComparison.Ordinal);
        Assert.Contains("frames verified: 8/8", output, StringComparison.Ordinal);
        Assert.Contains("leaked fds: 0", output, StringComparison.Ordinal);
    }

    [Fact]
    public void Share_UnknownResolution_IsBadUsageNamingTheChoices()
    {
        (int code, _, string errors) = Run("share", "--resolution", "8k");

        Assert.Equal((int)ExitCode.Usage, code);
        Assert.Contains("8k", errors, StringComparison.Ordinal);
        Assert.Contains("1080p", errors, StringComparison.Ordinal);
        Assert.Contains("4k", errors, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", errors, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--frames", "0")]
    [InlineData("--pool", "0")]
    [InlineData("--exporter", "ion")]
    public void Share_BadValue_IsBadUsage(string option, string value)
    {
        (int code, _, string errors) = Run("share", option, value);

        Assert.Equal((int)ExitCode.Usage, code);
        Assert.StartsWith("error:", errors, StringComparison.Ordinal);
    }

    [Fact]
    public void Share_DmaHeapAbsent_IsFeatureMissingNamingTheNode()
    {
        if (LinuxFeatures.Probe().HasDmaHeap("system"))
        {
            Assert.Equal(0, Run("share", "--exporter", "dma-heap", "--frames", "4", "--pool", "2", "--json").Code);
            return;
        }

        (int code, _, string errors) = Run("share", "--exporter", "dma-heap");

        Assert.Equal((int)ExitCode.FeatureMissing, code);
        Assert.Contains("/dev/dma_heap/system", errors, StringComparison.Ordinal);
        Assert.Contains("CONFIG_DMABUF_HEAPS", errors, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", errors, StringComparison.Ordinal);
    }

    [Fact]
    public void Share_UdmabufAbsent_IsFeatureMissingNamingTheNode()
    {
        if (LinuxFeatures.Probe().HasUdmabuf)
        {
            Assert.Equal(0, Run("share", "--exporter", "udmabuf", "--frames", "4", "--pool", "2", "--json").Code);
            return;
        }

        (int code, _, string errors) = Run("share", "--exporter", "udmabuf");

        Assert.Equal((int)ExitCode.FeatureMissing, code);
        Assert.Contains("/dev/udmabuf", errors, StringComparison.Ordinal);
        Assert.Contains("CONFIG_UDMABUF", errors, StringComparison.Ordinal);
    }

    [Fact]
    public void Share_DrmCardAbsent_IsFeatureMissingNamingTheDriver()
    {
        if (LinuxFeatures.Probe().DrmCardNode("vgem") is not null)
        {
            Assert.Skip("This machine has a vgem card, so share over it works: ShareKernelTests runs it.");
        }

        (int code, _, string errors) = Run("share", "--exporter", "drm-prime");

        Assert.Equal((int)ExitCode.FeatureMissing, code);
        Assert.Contains("vgem", errors, StringComparison.Ordinal);
        Assert.Contains("/dev/dri", errors, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", errors, StringComparison.Ordinal);
    }

    private static (int Code, string Output, string Errors) Run(params string[] args)
    {
        using var stdout = new StringWriter();
        using var stderr = new StringWriter();
        int code = DmaBufCommand.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }
}

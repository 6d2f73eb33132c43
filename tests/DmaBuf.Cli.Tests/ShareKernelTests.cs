using System.Text.Json;
using DmaBuf.Testing;

namespace DmaBuf.Cli.Tests;

/// <summary>
/// <c>dmabuf share --exporter drm-prime</c> on a kernel with vgem: real dma-bufs go to a real second process, which maps
/// each one once, brackets its reads with <c>DMA_BUF_IOCTL_SYNC</c> and verifies every frame; nothing leaks.
/// </summary>
[Trait(KernelRequirement.Trait, "vgem")]
[Collection(DescriptorCollection.Name)]
public sealed class ShareKernelTests
{
    [Fact]
    public void Share_DrmPrimeFrames_AreVerifiedInTheConsumer_AndNothingLeaks()
    {
        KernelRequirement.Require(f => f.RequireDrmDriver("vgem"));
        var stdout = new StringWriter();
        var stderr = new StringWriter();

        int code = DmaBufCommand.Run(["share", "--exporter", "drm-prime", "--frames", "12", "--pool", "3", "--json"], stdout, stderr);

        Assert.True(code == 0, $"exit {code}: {stderr}");
        using JsonDocument doc = JsonDocument.Parse(stdout.ToString());
        JsonElement r = doc.RootElement;
        Assert.Equal("drm-prime:vgem", r.GetProperty("exporter").GetString());
        Assert.Equal(12, r.GetProperty("framesVerified").GetInt32());
        Assert.Equal(0, r.GetProperty("framesFailed").GetInt32());
        Assert.Equal(0, r.GetProperty("leakedFds").GetInt32());
        // Each buffer is mapped once when the channel registers it, and every handoff reads through that mapping
        // (ReceivedBuffer.Frame) without asking the cache; only the shared-memory floor's page is looked up again (1).
        Assert.Equal(1, r.GetProperty("consumerMappingCache").GetProperty("hits").GetInt64());
    }
}

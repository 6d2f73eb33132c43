namespace DmaBuf.Linux.Tests;

public sealed class LinuxFeaturesTests : IDisposable
{
    private readonly DirectoryInfo _fakeDev = Directory.CreateTempSubdirectory("dmabuf-dev-");

    public void Dispose() => _fakeDev.Delete(recursive: true);

    [Fact]
    public void Probe_ThisMachine_HasMemfd()
    {
        LinuxFeatures features = LinuxFeatures.Probe();

        Assert.True(features.HasMemfd);
        features.RequireMemfd();
    }

    [Fact]
    public void Probe_ReportsWhatTheDeviceDirectoryHolds()
    {
        Directory.CreateDirectory(Path.Combine(_fakeDev.FullName, "dma_heap"));
        File.WriteAllText(Path.Combine(_fakeDev.FullName, "dma_heap", "system"), "");
        File.WriteAllText(Path.Combine(_fakeDev.FullName, "udmabuf"), "");

        LinuxFeatures features = LinuxFeatures.Probe(_fakeDev.FullName);

        Assert.Equal(["system"], features.DmaHeaps);
        Assert.True(features.HasDmaHeap("system"));
        Assert.True(features.HasUdmabuf);
    }

    [Fact]
    public void RequireDmaHeap_Absent_NamesTheNodeAndTheKernelOption()
    {
        LinuxFeatures features = LinuxFeatures.Probe(_fakeDev.FullName);

        FeatureNotAvailableException e = Assert.Throws<FeatureNotAvailableException>(() => features.RequireDmaHeap("system"));

        string node = Path.Combine(_fakeDev.FullName, "dma_heap", "system");
        Assert.Equal(node, e.DeviceNode);
        Assert.Contains(node, e.Message, StringComparison.Ordinal);
        Assert.Contains("CONFIG_DMABUF_HEAPS", e.Message, StringComparison.Ordinal);
        Assert.Contains("CONFIG_DMABUF_HEAPS_SYSTEM", e.ProvidedBy, StringComparison.Ordinal);
    }

    [Fact]
    public void RequireUdmabuf_Absent_NamesTheNodeAndTheKernelOption()
    {
        LinuxFeatures features = LinuxFeatures.Probe(_fakeDev.FullName);

        FeatureNotAvailableException e = Assert.Throws<FeatureNotAvailableException>(features.RequireUdmabuf);

        Assert.Equal(Path.Combine(_fakeDev.FullName, "udmabuf"), e.DeviceNode);
        Assert.Contains("CONFIG_UDMABUF", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Exporters_ForAbsentNodes_ThrowFeatureNotAvailable()
    {
        LinuxFeatures features = LinuxFeatures.Probe(_fakeDev.FullName);

        Assert.Throws<FeatureNotAvailableException>(() => new DmaHeapExporter("system", features: features).Dispose());
        Assert.Throws<FeatureNotAvailableException>(() => new UdmabufExporter(features: features).Dispose());
        Assert.Throws<FeatureNotAvailableException>(() => new DrmPrimeExporter(features: features).Dispose());
    }

    [Fact]
    public void RequireDrmDriver_Absent_NamesTheNodesAndTheVgemModule()
    {
        Directory.CreateDirectory(Path.Combine(_fakeDev.FullName, "dri"));
        File.WriteAllText(Path.Combine(_fakeDev.FullName, "dri", "card0"), ""); // not a DRM node: left out

        LinuxFeatures features = LinuxFeatures.Probe(_fakeDev.FullName);

        Assert.Empty(features.DrmCards);
        Assert.False(features.HasDrmDriver("vgem"));
        FeatureNotAvailableException e = Assert.Throws<FeatureNotAvailableException>(() => features.RequireDrmDriver("vgem"));
        Assert.Equal(Path.Combine(_fakeDev.FullName, "dri", "card*"), e.DeviceNode);
        Assert.Contains("vgem", e.ProvidedBy, StringComparison.Ordinal);
        Assert.Contains("CONFIG_DRM_VGEM", e.Message, StringComparison.Ordinal);
    }
}

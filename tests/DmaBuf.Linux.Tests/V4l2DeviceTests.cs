using DmaBuf.Linux.V4l2;

namespace DmaBuf.Linux.Tests;

/// <summary>The V4L2 interop on any machine: nodes that are not V4L2 devices, absent drivers, fourcc codes.</summary>
public sealed class V4l2DeviceTests : IDisposable
{
    private readonly DirectoryInfo _fakeDev = Directory.CreateTempSubdirectory("dmabuf-dev-");

    public void Dispose() => _fakeDev.Delete(recursive: true);

    [Fact]
    public void Open_DevNull_IsNotAV4l2Device()
    {
        LinuxErrorException e = Assert.Throws<LinuxErrorException>(() => V4l2Device.Open("/dev/null"));

        Assert.Equal("ioctl(VIDIOC_QUERYCAP)", e.Call);
        Assert.Equal("ENOTTY", e.ErrnoName);
        Assert.Contains("/dev/null is not a V4L2 device", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_RegularFile_IsNotAV4l2Device_AndItsDescriptorIsClosed()
    {
        string file = Path.Combine(_fakeDev.FullName, "video0");
        File.WriteAllText(file, "not a device");
        Leaks.AssertNone(() =>
        {
            LinuxErrorException e = Assert.Throws<LinuxErrorException>(() => V4l2Device.Open(file));

            Assert.Equal("ENOTTY", e.ErrnoName);
            Assert.Contains($"{file} is not a V4L2 device", e.Message, StringComparison.Ordinal);
        });
    }

    [Fact]
    public void Open_MissingNode_NamesThePath()
    {
        string missing = Path.Combine(_fakeDev.FullName, "video7");

        LinuxErrorException e = Assert.Throws<LinuxErrorException>(() => V4l2Device.Open(missing));

        Assert.Equal(("open", "ENOENT"), (e.Call, e.ErrnoName));
        Assert.Contains(missing, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void FindCapture_WithoutTheDriver_NamesTheNodesAndTheModule()
    {
        File.WriteAllText(Path.Combine(_fakeDev.FullName, "video0"), ""); // not a V4L2 node: left out
        LinuxFeatures features = LinuxFeatures.Probe(_fakeDev.FullName);

        FeatureNotAvailableException e = Assert.Throws<FeatureNotAvailableException>(() => V4l2Device.FindCapture("vivid", features));

        Assert.Empty(features.VideoDevices);
        Assert.False(features.HasV4l2Driver("vivid"));
        Assert.Equal(Path.Combine(_fakeDev.FullName, "video*"), e.DeviceNode);
        Assert.Contains("modprobe vivid", e.ProvidedBy, StringComparison.Ordinal);
        Assert.Contains("CONFIG_VIDEO_VIVID", e.Message, StringComparison.Ordinal);
        Assert.Contains("no video devices are present", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void RequireV4l2Driver_OtherDriver_NamesTheV4l2Core()
    {
        LinuxFeatures features = LinuxFeatures.Probe(_fakeDev.FullName);

        FeatureNotAvailableException e = Assert.Throws<FeatureNotAvailableException>(() => features.RequireV4l2Driver("uvcvideo"));

        Assert.Contains("'uvcvideo'", e.Message, StringComparison.Ordinal);
        Assert.Contains("CONFIG_VIDEO_DEV", e.ProvidedBy, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => features.RequireV4l2Driver(""));
    }

    [Fact]
    public void FourCC_PacksLittleEndian_AsTheKernelsMacro()
    {
        Assert.Equal(0x56595559u, V4l2FourCC.Yuyv.Value); // v4l2_fourcc('Y', 'U', 'Y', 'V')
        Assert.Equal("YUYV", V4l2FourCC.Yuyv.ToString());
        Assert.Equal(V4l2FourCC.Yuyv, V4l2FourCC.FromString("YUYV"));
        Assert.Equal("Y16 -BE", new V4l2FourCC(V4l2FourCC.FromString("Y16 ").Value | (1u << 31)).ToString());
        Assert.Equal("0x00000001", new V4l2FourCC(1).ToString());
        Assert.Throws<ArgumentException>(() => V4l2FourCC.FromString("YUY"));
        Assert.Throws<ArgumentException>(() => V4l2FourCC.FromString("YUYVV"));
    }

    [Fact]
    public void Capability_NodeCaps_AreTheDeviceCapsWhenTheDriverFillsThemIn()
    {
        var withDeviceCaps = new V4l2Capability(
            "vivid", "vivid", "platform:vivid-000", new Version(6, 1, 0),
            V4l2Caps.VideoCapture | V4l2Caps.VideoOutput | V4l2Caps.Streaming | V4l2Caps.DeviceCaps, V4l2Caps.VideoOutput | V4l2Caps.Streaming);
        var withoutDeviceCaps = withDeviceCaps with { Capabilities = V4l2Caps.VideoCapture | V4l2Caps.Streaming, DeviceCaps = 0 };

        Assert.Equal(V4l2Caps.VideoOutput | V4l2Caps.Streaming, withDeviceCaps.NodeCaps);
        Assert.Equal(V4l2Caps.VideoCapture | V4l2Caps.Streaming, withoutDeviceCaps.NodeCaps);
    }
}

using System.Diagnostics;
using DmaBuf.Linux.TestPeer;
using DmaBuf.Linux.V4l2;
using DmaBuf.Testing;

namespace DmaBuf.Linux.Tests;

/// <summary>
/// A kernel device sharing buffers with us both ways, against vivid (the kernel's virtual video test driver): vivid
/// capturing into dma-bufs we allocated on vgem (<c>V4L2_MEMORY_DMABUF</c>), and vivid's own buffers exported with
/// <c>VIDIOC_EXPBUF</c> and imported by us. Every frame is read back through our CPU mapping and must be vivid's colour
/// bars (<see cref="VividColorBars"/>). Skips without vivid (and vgem, for the import side).
/// </summary>
[Trait(KernelRequirement.Trait, "vivid")]
public sealed class V4l2VividTests : IDisposable
{
    private const int Width = 640;
    private const int Height = 360;
    private static readonly TimeSpan s_frameTimeout = TimeSpan.FromSeconds(10); // a hang guard: vivid's webcam sends a frame every 200 ms

    private readonly ITestOutputHelper _output;
    private readonly BufferRegistry _registry = new("v4l2 tests");
    private readonly MmapCache _cache = new();
    private readonly List<IDisposable> _cleanup = [];

    public V4l2VividTests(ITestOutputHelper output) => _output = output;

    public void Dispose()
    {
        for (int i = _cleanup.Count - 1; i >= 0; i--)
        {
            _cleanup[i].Dispose();
        }
    }

    [Fact]
    public void FindCapture_Vivid_IsAStreamingCaptureNodeOfferingYuyv()
    {
        using V4l2Device device = OpenVivid();

        Assert.Equal("vivid", device.Capability.Driver);
        Assert.True(device.Capability.NodeCaps.HasFlag(V4l2Caps.VideoCapture | V4l2Caps.Streaming), device.Capability.ToString());
        Assert.StartsWith("/dev/video", device.Path, StringComparison.Ordinal);
        IReadOnlyList<V4l2FmtDesc> formats = device.EnumerateFormats();
        Assert.Contains(formats, f => f.PixelFormat == V4l2FourCC.Yuyv);
        Assert.Equal(Enumerable.Range(0, formats.Count), formats.Select(f => f.Index));
        _output.WriteLine($"{device}: {device.Capability}; {formats.Count} formats; current {device.GetFormat()}");
    }

    [Fact]
    public void Open_VividNodeWithoutVideoCapture_IsRefused()
    {
        LinuxFeatures features = KernelRequirement.Require(f => f.RequireV4l2Driver("vivid"));
        foreach (string node in features.V4l2DeviceNodes("vivid"))
        {
            try
            {
                using V4l2Device device = V4l2Device.Open(node);
            }
            catch (NotSupportedException e)
            {
                Assert.Contains(node, e.Message, StringComparison.Ordinal);
                Assert.Contains("capture", e.Message, StringComparison.Ordinal);
                return; // e.g. vivid's video output node
            }
        }

        Assert.Skip("Every vivid node captures video; vivid was loaded with only capture nodes.");
    }

    [Fact]
    public void DmaBufCapture_VividFillsOurVgemBuffers_WithItsColourBars() => CaptureInto(Vgem());

    [Fact]
    [Trait(KernelRequirement.Trait, "dma-heap")]
    public void DmaBufCapture_VividFillsOurDmaHeapBuffers_WithItsColourBars()
    {
        LinuxFeatures features = KernelRequirement.Require(f => f.RequireDmaHeap("system"));
        var heap = new DmaHeapExporter("system", _cache, _registry, features);
        _cleanup.Add(heap);
        CaptureInto(heap);
    }

    [Fact]
    [Trait(KernelRequirement.Trait, "udmabuf")]
    public void DmaBufCapture_VividFillsOurUdmabufsFromSealedMemfds_WithItsColourBars()
    {
        LinuxFeatures features = KernelRequirement.Require(f => f.RequireUdmabuf());
        var udmabuf = new UdmabufExporter(_cache, _registry, features);
        _cleanup.Add(udmabuf);
        CaptureInto(udmabuf);
    }

    /// <summary>
    /// vivid captures 30 frames into a pool of 4 dma-bufs <paramref name="exporter"/> allocated; each frame is read
    /// through our mapping and checked against the colour bars, then poisoned and queued again.
    /// </summary>
    private void CaptureInto(LinuxExporter exporter)
    {
        const int Pool = 4;
        const int Frames = 30;
        using V4l2Device device = OpenVivid();
        V4l2PixFormat format = SetYuyv(device);
        var pool = new DmaBufHandle[Pool];
        for (int i = 0; i < Pool; i++)
        {
            pool[i] = Track(exporter.Allocate(format.SizeImage, $"vivid-{i}"));
            Poison(pool[i]);
        }

        int granted = device.RequestBuffers(Pool, V4l2Memory.DmaBuf);
        Assert.Equal(Pool, granted);
        for (int i = 0; i < Pool; i++)
        {
            device.QueueDmaBuf(i, pool[i]);
        }

        var clock = Stopwatch.StartNew();
        device.StreamOn();
        uint? lastSequence = null;
        TimeSpan lastTimestamp = TimeSpan.MinValue;
        int dropped = 0;
        for (int n = 0; n < Frames; n++)
        {
            using V4l2Buffer frame = device.Dequeue(s_frameTimeout);
            string what = $"frame {n} ({frame})";
            Assert.Equal(V4l2Memory.DmaBuf, frame.Memory);
            Assert.NotNull(frame.DmaBuf);
            Assert.Same(pool[frame.Index].Buffer, frame.DmaBuf.Buffer); // the buffer queued at that index came back
            Assert.Equal(format.SizeImage, frame.BytesUsed);
            Assert.False(frame.Flags.HasFlag(V4l2BufferFlags.Error), what);
            Assert.True(frame.Flags.HasFlag(V4l2BufferFlags.TimestampMonotonic), what);
            Assert.True(lastSequence is null || frame.Sequence > lastSequence, $"{what}: sequence after {lastSequence}");
            Assert.True(frame.Timestamp > lastTimestamp, $"{what}: timestamp after {lastTimestamp}");
            dropped += lastSequence is { } last ? (int)(frame.Sequence - last - 1) : 0;
            (lastSequence, lastTimestamp) = (frame.Sequence, frame.Timestamp);

            ReadThroughOurMapping(frame.DmaBuf, format, what);
            Poison(frame.DmaBuf); // so the next time this buffer comes back, its content is proven new
            if (n + Pool < Frames)
            {
                device.QueueDmaBuf(frame.Index, frame.DmaBuf);
            }
        }

        TimeSpan elapsed = clock.Elapsed;
        device.StreamOff();
        Assert.Equal(0, device.QueuedCount);
        Assert.All(pool, h => Assert.Equal(1, h.Buffer.ReferenceCount)); // the device let go of every buffer
        _output.WriteLine(
            $"{Frames} frames of {format} from {device.Path} into {Pool} {exporter.Name} dma-bufs in {elapsed.TotalSeconds:F2} s " +
            $"({Frames / elapsed.TotalSeconds:F1} frames/s), sequence 0..{lastSequence}, {dropped} dropped");
    }

    [Fact]
    public void ExportBuffer_VividsOwnBuffers_AreImportedOnceEach_AndHoldTheFrames()
    {
        const int Frames = 8;
        using V4l2Device device = OpenVivid(new ImportCache(_cache, _registry));
        V4l2PixFormat format = SetYuyv(device);
        int granted = device.RequestBuffers(4, V4l2Memory.Mmap);
        Assert.InRange(granted, 2, 32);
        var exported = new DmaBufHandle[granted];
        for (int i = 0; i < granted; i++)
        {
            exported[i] = Track(device.ExportBuffer(i));
            LinuxBuffer linux = exported[i].Buffer.GetLinuxBuffer();
            Assert.Equal(LinuxBufferKind.DmaBuf, linux.Kind);
            Assert.True(exported[i].Buffer.Size >= format.SizeImage);
            Assert.True(_registry.Contains(exported[i].Buffer.Id));
            using DmaBufHandle again = device.ExportBuffer(i);
            Assert.Same(exported[i].Buffer, again.Buffer); // the same DmaBuffer for the same index
            _output.WriteLine($"buffer {i}: {exported[i].Buffer}, {linux.Identity}");
        }

        Assert.Equal(granted, exported.Select(h => h.Buffer.GetLinuxBuffer().Identity).Distinct().Count()); // one dma-buf per index
        _output.WriteLine($"VIDIOC_EXPBUF of buffer 0 twice more, straight to the kernel: {RawExport(device, 0)}, {RawExport(device, 0)}");
        for (int i = 0; i < granted; i++)
        {
            Poison(exported[i]);
            device.QueueMmap(i);
        }

        device.StreamOn();
        for (int n = 0; n < Frames; n++)
        {
            using V4l2Buffer frame = device.Dequeue(s_frameTimeout);
            Assert.Null(frame.DmaBuf);
            Assert.Equal(format.SizeImage, frame.BytesUsed);
            ReadThroughOurMapping(exported[frame.Index], format, $"frame {n} ({frame})");
            Poison(exported[frame.Index]);
            device.QueueMmap(frame.Index);
        }

        device.StreamOff();
        Assert.Equal(0, device.RequestBuffers(0, V4l2Memory.Mmap));

        // The exports outlive the queue's buffers: each dma-buf holds its memory.
        Assert.All(exported, h => Assert.Equal(DmaBufState.Live, h.Buffer.State));
        using CpuMapping mapping = exported[0].MapCpu();
        mapping.Span[..4].Fill(7);
        Assert.Equal([7, 7, 7, 7], mapping.Span[..4].ToArray());
    }

    [Fact]
    public void QueuedBuffer_OutlivesTheCallersHandle_UntilItIsDequeued()
    {
        using V4l2Device device = OpenVivid();
        V4l2PixFormat format = SetYuyv(device);
        DrmPrimeExporter vgem = Vgem();
        device.RequestBuffers(2, V4l2Memory.DmaBuf);
        var buffers = new DmaBuffer[2];
        for (int i = 0; i < 2; i++)
        {
            DmaBufHandle handle = vgem.Allocate(format.SizeImage);
            buffers[i] = handle.Buffer;
            Poison(handle);
            device.QueueDmaBuf(i, handle);
            handle.Dispose(); // the caller lets go at once
        }

        Assert.All(buffers, b => Assert.Equal(DmaBufState.Live, b.State));
        Assert.All(buffers, b => Assert.Equal(1, b.ReferenceCount)); // the device's own reference
        Assert.All(buffers, b => Assert.True(_registry.Contains(b.Id)));

        device.StreamOn();
        using (V4l2Buffer frame = device.Dequeue(s_frameTimeout))
        {
            Assert.Same(buffers[frame.Index], frame.DmaBuf!.Buffer);
            ReadThroughOurMapping(frame.DmaBuf, format, frame.ToString()); // still there, and filled
            Assert.Equal(DmaBufState.Live, buffers[frame.Index].State);
        }

        Assert.Single(buffers, b => b.State == DmaBufState.Released); // the dequeued one went with the frame
        device.StreamOff();
        Assert.All(buffers, b => Assert.Equal(DmaBufState.Released, b.State)); // and StreamOff dropped the other
        Assert.Equal(0, _registry.Count);
    }

    [Fact]
    public void RequestBuffersAndDispose_DropTheReferencesOfQueuedBuffers()
    {
        DrmPrimeExporter vgem = Vgem();
        using V4l2Device device = OpenVivid();
        V4l2PixFormat format = SetYuyv(device);
        device.RequestBuffers(2, V4l2Memory.DmaBuf);
        DmaBuffer requeued = QueueAndForget(device, vgem, 0, format);
        Assert.Equal(DmaBufState.Live, requeued.State);

        device.RequestBuffers(2, V4l2Memory.DmaBuf); // the kernel cancels the queue: our reference goes with it
        Assert.Equal(DmaBufState.Released, requeued.State);
        Assert.Equal(0, device.QueuedCount);

        DmaBuffer streaming = QueueAndForget(device, vgem, 1, format);
        device.StreamOn();
        device.Dispose();
        Assert.Equal(DmaBufState.Released, streaming.State);
        Assert.Equal(0, _registry.Count);
    }

    [Fact]
    public void DmaBufStreaming_OpenToDispose_LeaksNoDescriptorOrMapping()
    {
        DrmPrimeExporter vgem = Vgem();
        Leaks.AssertNone(
            () =>
            {
                using V4l2Device device = OpenVivid();
                V4l2PixFormat format = SetYuyv(device);
                device.RequestBuffers(2, V4l2Memory.DmaBuf);
                for (int i = 0; i < 2; i++)
                {
                    using DmaBufHandle handle = vgem.Allocate(format.SizeImage);
                    Poison(handle);
                    device.QueueDmaBuf(i, handle);
                }

                device.StreamOn();
                using (V4l2Buffer frame = device.Dequeue(s_frameTimeout))
                {
                    ReadThroughOurMapping(frame.DmaBuf!, format, frame.ToString());
                }

                device.StreamOff();
                Assert.Equal(0, _registry.Count);
                device.RequestBuffers(0, V4l2Memory.DmaBuf);
            },
            rounds: 2);
    }

    [Fact]
    public void QueueDmaBuf_TooSmallForTheFormat_IsRefusedByTheKernelAtQbuf()
    {
        using V4l2Device device = OpenVivid();
        V4l2PixFormat format = SetYuyv(device);
        DrmPrimeExporter vgem = Vgem();
        device.RequestBuffers(2, V4l2Memory.DmaBuf);
        using DmaBufHandle small = vgem.Allocate(format.SizeImage / 2);

        LinuxErrorException e = Assert.Throws<LinuxErrorException>(() => device.QueueDmaBuf(0, small));

        Assert.Equal("ioctl(VIDIOC_QBUF)", e.Call);
        Assert.Equal("EINVAL", e.ErrnoName);
        Assert.Contains("VIDIOC_QBUF", e.Message, StringComparison.Ordinal);
        Assert.Contains($"{small.Buffer.GetLinuxBuffer().FileSize} bytes", e.Message, StringComparison.Ordinal);
        Assert.Equal(1, small.Buffer.ReferenceCount); // the device kept nothing
        Assert.Equal(0, device.QueuedCount);

        using DmaBufHandle enough = vgem.Allocate(format.SizeImage);
        device.QueueDmaBuf(0, enough); // the index is still usable
        Assert.Equal(1, device.QueuedCount);
        _output.WriteLine(e.Message);
    }

    [Fact]
    public void Misuse_IsRefusedWithClearErrors()
    {
        using V4l2Device device = OpenVivid();
        V4l2PixFormat format = SetYuyv(device);
        DrmPrimeExporter vgem = Vgem();
        using DmaBufHandle buffer = vgem.Allocate(format.SizeImage);

        Assert.Contains("RequestBuffers", Assert.Throws<InvalidOperationException>(() => device.QueueDmaBuf(0, buffer)).Message, StringComparison.Ordinal);
        int granted = device.RequestBuffers(2, V4l2Memory.DmaBuf);
        Assert.Throws<ArgumentOutOfRangeException>(() => device.QueueDmaBuf(granted, buffer));
        Assert.Throws<ArgumentOutOfRangeException>(() => device.QueueDmaBuf(-1, buffer));
        Assert.Throws<InvalidOperationException>(() => device.QueueMmap(0)); // a DMABUF queue
        Assert.Throws<InvalidOperationException>(() => device.ExportBuffer(0)); // only MMAP buffers export
        Assert.Contains("StreamOn", Assert.Throws<InvalidOperationException>(() => device.Dequeue(TimeSpan.Zero)).Message, StringComparison.Ordinal);
        using DmaBufHandle memfd = new MemfdExporter(_cache, _registry).Allocate(format.SizeImage);
        Assert.Throws<ArgumentException>(() => device.QueueDmaBuf(0, memfd));

        device.QueueDmaBuf(0, buffer);
        Assert.Throws<InvalidOperationException>(() => device.QueueDmaBuf(0, buffer)); // already queued
        Assert.Equal(2, buffer.Buffer.ReferenceCount);
        using DmaBufHandle second = vgem.Allocate(format.SizeImage);
        device.QueueDmaBuf(1, second);

        device.StreamOn();
        Assert.True(device.IsStreaming);
        Assert.Equal(V4l2Memory.DmaBuf, device.Memory);
        LinuxErrorException busy = Assert.Throws<LinuxErrorException>(() => device.RequestBuffers(2, V4l2Memory.DmaBuf));
        Assert.Equal(("ioctl(VIDIOC_REQBUFS)", "EBUSY"), (busy.Call, busy.ErrnoName));
        for (int i = 0; i < 2; i++)
        {
            using V4l2Buffer frame = device.Dequeue(s_frameTimeout);
            Assert.Equal(i, frame.Index);
        }

        Assert.Contains("no buffer is queued", Assert.Throws<InvalidOperationException>(() => device.Dequeue(TimeSpan.Zero)).Message, StringComparison.Ordinal);
        device.Dispose();
        device.Dispose(); // idempotent
        Assert.Throws<ObjectDisposedException>(() => device.QueueDmaBuf(0, buffer));
        Assert.Throws<ObjectDisposedException>(() => device.Dequeue(TimeSpan.Zero));
        Assert.Throws<ObjectDisposedException>(device.GetFormat);
        Assert.Equal(1, buffer.Buffer.ReferenceCount);
    }

    private V4l2Device OpenVivid(ImportCache? imports = null)
    {
        LinuxFeatures features = KernelRequirement.Require(f => f.RequireV4l2Driver("vivid"));
        return V4l2Device.FindCapture("vivid", features, imports ?? new ImportCache(_cache, _registry));
    }

    private DrmPrimeExporter Vgem()
    {
        DrmPrimeExporter vgem = KernelRequirement.Vgem(_cache, _registry);
        _cleanup.Add(vgem);
        return vgem;
    }

    private DmaBufHandle Track(DmaBufHandle handle)
    {
        _cleanup.Add(handle);
        return handle;
    }

    /// <summary>Asks for 640x360 YUYV progressive (vivid's webcam default) and checks the driver agreed.</summary>
    internal static V4l2PixFormat SetYuyv(V4l2Device device)
    {
        V4l2PixFormat format = device.SetFormat(new V4l2PixFormat(Width, Height, V4l2FourCC.Yuyv));
        Assert.Equal((Width, Height, V4l2FourCC.Yuyv, V4l2Field.None), (format.Width, format.Height, format.PixelFormat, format.Field));
        Assert.True(format.BytesPerLine >= Width * 2);
        Assert.True(format.SizeImage >= format.BytesPerLine * Height);
        return format;
    }

    private static DmaBuffer QueueAndForget(V4l2Device device, DrmPrimeExporter vgem, int index, V4l2PixFormat format)
    {
        using DmaBufHandle handle = vgem.Allocate(format.SizeImage);
        device.QueueDmaBuf(index, handle);
        return handle.Buffer;
    }

    /// <summary>
    /// The identity of a dma-buf exported with <c>VIDIOC_EXPBUF</c> without the device's bookkeeping, to see what the
    /// kernel does when an index is exported again (videobuf2 makes a new dma-buf each time).
    /// </summary>
    private static unsafe FileIdentity RawExport(V4l2Device device, int index)
    {
        var fd = (SafeFdHandle)typeof(V4l2Device).GetField("_fd", System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.NonPublic)!.GetValue(device)!;
        var export = new Interop.Libc.v4l2_exportbuffer { type = Interop.Libc.V4L2_BUF_TYPE_VIDEO_CAPTURE, index = (uint)index, flags = Interop.Libc.O_RDWR | Interop.Libc.O_CLOEXEC };
        Interop.Libc.Ioctl(fd, Interop.Libc.VIDIOC_EXPBUF, &export, "ioctl(VIDIOC_EXPBUF)");
        using var exported = new SafeFdHandle(export.fd);
        return FileIdentity.Of(exported);
    }

    /// <summary>Fills the whole buffer with the poison through our mapping, bracketed for CPU writes.</summary>
    internal static void Poison(DmaBufHandle buffer)
    {
        using CpuMapping mapping = buffer.MapCpu();
        buffer.BeginCpuAccess(CpuAccess.Write);
        try
        {
            mapping.Span.Fill(VividColorBars.Poison);
        }
        finally
        {
            buffer.EndCpuAccess(CpuAccess.Write);
        }
    }

    /// <summary>Reads the frame through our mapping, bracketed for CPU reads (DMA_BUF_IOCTL_SYNC), and checks it.</summary>
    private static void ReadThroughOurMapping(DmaBufHandle buffer, V4l2PixFormat format, string what)
    {
        using CpuMapping mapping = buffer.MapCpu();
        buffer.BeginCpuAccess(CpuAccess.Read);
        try
        {
            VividColorBars.AssertFrame(mapping.Span, format, what);
        }
        finally
        {
            buffer.EndCpuAccess(CpuAccess.Read);
        }
    }
}

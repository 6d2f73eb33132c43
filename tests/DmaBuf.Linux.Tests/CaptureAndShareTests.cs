using System.Diagnostics;
using System.Globalization;
using DmaBuf.Linux.V4l2;
using DmaBuf.Testing;

namespace DmaBuf.Linux.Tests;

/// <summary>
/// The pipeline a user would build, end to end against the kernel: vivid captures into dma-bufs we allocated (the
/// system dma-heap, or udmabufs made from our sealed memfds), each frame goes over a <see cref="BufferChannel"/> to a
/// second process (the test peer's <c>frames</c> mode), which maps the dma-buf it received and checks the frame against
/// vivid's colour bars. Zero copy: the peer reports the <c>(st_dev, st_ino)</c> of the dma-buf it mapped, which must be
/// the one vivid filled. Every frame is checked, and neither process is left holding a descriptor or a mapping.
/// </summary>
[Trait(KernelRequirement.Trait, "vivid")]
public sealed class CaptureAndShareTests : IDisposable
{
    private const int Pool = 4;
    private const int Frames = 20;
    private static readonly TimeSpan s_frameTimeout = TimeSpan.FromSeconds(10); // hang guards: vivid sends a frame every 200 ms
    private static readonly TimeSpan s_patience = TimeSpan.FromSeconds(120); // the peer's start in the guest is slow

    private readonly ITestOutputHelper _output;
    private readonly BufferRegistry _registry = new("capture and share");
    private readonly MmapCache _cache = new();
    private readonly List<IDisposable> _cleanup = [];

    public CaptureAndShareTests(ITestOutputHelper output) => _output = output;

    public void Dispose()
    {
        for (int i = _cleanup.Count - 1; i >= 0; i--)
        {
            _cleanup[i].Dispose();
        }
    }

    [Fact]
    [Trait(KernelRequirement.Trait, "dma-heap")]
    public void VividIntoOurDmaHeapBuffers_ToASecondProcess_EveryFrameChecked_NothingLeaked()
    {
        LinuxFeatures features = KernelRequirement.Require(f => f.RequireDmaHeap("system"));
        KernelRequirement.Require(f => f.RequireV4l2Driver("vivid"));
        var heap = new DmaHeapExporter("system", _cache, _registry, features);
        _cleanup.Add(heap);
        CaptureAndShare(heap);
    }

    [Fact]
    [Trait(KernelRequirement.Trait, "udmabuf")]
    public void VividIntoOurUdmabufs_ToASecondProcess_EveryFrameChecked_NothingLeaked()
    {
        LinuxFeatures features = KernelRequirement.Require(f => f.RequireUdmabuf());
        KernelRequirement.Require(f => f.RequireV4l2Driver("vivid"));
        var udmabuf = new UdmabufExporter(_cache, _registry, features);
        _cleanup.Add(udmabuf);
        CaptureAndShare(udmabuf);
    }

    /// <summary>
    /// Runs the pipeline once to warm up (the runtime opens some files the first time it needs them), then once more,
    /// and asserts that this process holds no descriptor or buffer mapping after the second run that it did not hold
    /// after the first. The peer checks itself in each run.
    /// </summary>
    private void CaptureAndShare(LinuxExporter exporter) => Leaks.AssertNone(() => RunPipeline(exporter), rounds: 1);

    private void RunPipeline(LinuxExporter exporter)
    {
        LinuxFeatures features = KernelRequirement.Require(f => f.RequireV4l2Driver("vivid"));
        using V4l2Device device = V4l2Device.FindCapture("vivid", features, new ImportCache(_cache, _registry));
        V4l2PixFormat format = V4l2VividTests.SetYuyv(device);
        var pool = new DmaBufHandle[Pool];
        try
        {
            for (int i = 0; i < Pool; i++)
            {
                pool[i] = exporter.Allocate(format.SizeImage, $"shared-{i}");
                V4l2VividTests.Poison(pool[i]);
            }

            Assert.Equal(Pool, device.RequestBuffers(Pool, V4l2Memory.DmaBuf));
            for (int i = 0; i < Pool; i++)
            {
                device.QueueDmaBuf(i, pool[i]);
            }

            string socket = ProcessResources.UniqueSocketName("capture-and-share");
            using BufferChannelListener listener = BufferChannelListener.Listen(socket);
            using PeerProcess peer = PeerProcess.Start(
                "frames", socket, Text(format.Width), Text(format.Height), Text(format.BytesPerLine), Text(format.SizeImage));
            using BufferChannel channel = listener.Accept(s_patience);
            peer.Expect("READY");

            var clock = Stopwatch.StartNew();
            device.StreamOn();
            var carried = new List<string>();
            for (int n = 0; n < Frames; n++)
            {
                using V4l2Buffer frame = device.Dequeue(s_frameTimeout);
                string what = $"frame {n} ({frame})";
                Assert.NotNull(frame.DmaBuf);
                Assert.Same(pool[frame.Index].Buffer, frame.DmaBuf.Buffer);
                Assert.Equal(format.SizeImage, frame.BytesUsed);
                Assert.False(frame.Flags.HasFlag(V4l2BufferFlags.Error), what);
                FileIdentity ours = frame.DmaBuf.Buffer.GetLinuxBuffer().Identity;

                long sequence = channel.SendBuffer(frame.DmaBuf, userData: (ulong)n);
                string[] seen = peer.Expect("FRAME"); // seq n dev ino fd verdict...
                Assert.True(seen.Length >= 6, $"{what}: the peer said 'FRAME {string.Join(' ', seen)}'");
                Assert.True(seen[5] == "ok", $"{what}: the peer refused it: {string.Join(' ', seen[5..])}");
                Assert.Equal((Text(sequence), Text(n)), (seen[0], seen[1]));
                Assert.Equal((Text(ours.Device), Text(ours.Inode)), (seen[2], seen[3])); // the dma-buf vivid filled: no copy
                carried.Add(seen[4]);
                WaitForRelease(channel, sequence, what);

                V4l2VividTests.Poison(frame.DmaBuf); // the next time this buffer comes back, its content is proven new
                if (n + Pool < Frames)
                {
                    device.QueueDmaBuf(frame.Index, frame.DmaBuf);
                }
            }

            TimeSpan elapsed = clock.Elapsed;
            device.StreamOff();
            Assert.Equal(Pool, carried.Count(c => c == "1")); // each pool buffer's descriptor crossed once
            Assert.Equal(Pool, (int)channel.Statistics.FdsSent);

            channel.Dispose(); // goodbye: the peer drops its imports and reports what it still holds
            string[] fds = peer.Expect("FDS");
            Assert.True(fds[2] == "0", $"the peer leaked {fds[2]} descriptors ({fds[0]} before, {fds[1]} after): {string.Join(' ', fds[3..])}");
            Assert.Equal(["0", "0"], peer.Expect("DMABUFS")); // no dma-buf descriptor or mapping left, the first frame's included
            Assert.Equal(["0"], peer.Expect("IMPORTS"));
            peer.Expect("END");
            Assert.Equal(0, peer.WaitForExit());
            _output.WriteLine(
                $"{Frames} frames of {format} from {device.Path} into {Pool} {exporter.Name} dma-bufs, each checked in pid {peer.Id}, " +
                $"in {elapsed.TotalSeconds:F2} s; the peer's descriptors: {fds[0]} before, {fds[1]} after");
        }
        finally
        {
            foreach (DmaBufHandle? handle in pool)
            {
                handle?.Dispose();
            }
        }
    }

    private static void WaitForRelease(BufferChannel channel, long sequence, string what)
    {
        while (true)
        {
            ChannelMessage? message = channel.Receive(s_patience);
            Assert.True(message is not null, $"{what}: the peer ended the connection before releasing it");
            if (message is BufferReleased released && released.Sequence == sequence)
            {
                return;
            }
        }
    }

    private static string Text<T>(T value)
        where T : IFormattable => value.ToString(null, CultureInfo.InvariantCulture);
}

using DmaBuf.Testing;

namespace DmaBuf.Linux.Tests;

/// <summary>
/// Fences across processes: a vgem buffer with an unsignaled write fence (<c>VGEM_FENCE_ATTACH</c>), its sync_file
/// exported (<c>DMA_BUF_IOCTL_EXPORT_SYNC_FILE</c>) and sent with the frame to a second process, which waits on the
/// received fence before reading. This side writes the frame, then signals the fence (<c>VGEM_FENCE_SIGNAL</c>).
/// </summary>
[Trait(KernelRequirement.Trait, "vgem")]
public sealed class CrossProcessFenceTests : IDisposable
{
    private const long Size = 64 * 1024;
    private static readonly TimeSpan s_patience = TimeSpan.FromSeconds(120); // the peer's start in the guest is slow
    private static readonly TimeSpan s_signalAfter = TimeSpan.FromMilliseconds(300);
    private const int PeerTimeoutMs = 1000;
    private readonly VgemFences _fences = new();

    private DrmPrimeExporter Exporter => _fences.Exporter;

    public void Dispose() => _fences.Dispose();

    [Fact]
    public void ASyncFileSentWithAFrame_IsWaitedOnByThePeer_WhichSeesTheBytesWrittenBeforeTheSignal_AndTimesOutOnOneNeverSignaled()
    {
        using DmaBufHandle handle = Exporter.Allocate(Size, "fenced-frame");
        using CpuMapping map = handle.MapCpu();
        handle.BeginCpuAccess(CpuAccess.Write);
        map.Span.Fill(0x11);
        handle.EndCpuAccess(CpuAccess.Write);
        _ = _fences.Card; // opened before the snapshot: it stays open until the class is disposed
        ProcessSnapshot before = ProcessSnapshot.Take();

        string socket = ProcessResources.UniqueSocketName("fenced");
        using (BufferChannelListener listener = BufferChannelListener.Listen(socket))
        using (PeerProcess peer = PeerProcess.Start("fenced", socket, PeerTimeoutMs.ToString(System.Globalization.CultureInfo.InvariantCulture)))
        {
            using (BufferChannel channel = listener.Accept(s_patience))
            {
                peer.Expect("READY");

                // Frame 1: the fence signals 300 ms after the send, once this side has written the frame's bytes.
                uint first = AttachFence(handle);
                long sequence;
                using (KernelSyncFile fence = handle.ExportSyncFile(CpuAccess.Read))
                {
                    Assert.False(fence.IsSignaled);
                    sequence = channel.SendBufferWithFence(handle, fence, userData: 1);
                }

                Assert.Equal(sequence.ToString(System.Globalization.CultureInfo.InvariantCulture), peer.Expect("WAITING")[0]);
                Thread.Sleep(s_signalAfter); // the fenced writer's work: the peer must not read before it is done
                map.Span.Fill(0x22);
                _fences.Signal(first);
                string[] seen = peer.Expect("FENCED"); // seq ms byte same fds
                Assert.Equal(sequence.ToString(System.Globalization.CultureInfo.InvariantCulture), seen[0]);
                Assert.True(long.Parse(seen[1], System.Globalization.CultureInfo.InvariantCulture) >= 250, $"the peer waited only {seen[1]} ms for the fence");
                Assert.Equal(("22", "1"), (seen[2], seen[3])); // every byte written before the signal, none of the old ones
                Assert.Equal("2", seen[4]); // the buffer's descriptor and the fence's came together
                WaitForRelease(channel, sequence);

                // Frame 2 (id-only, the buffer is registered): a fence that never signals; the peer's wait times out.
                uint second = AttachFence(handle);
                using (KernelSyncFile fence = handle.ExportSyncFile(CpuAccess.Read))
                {
                    sequence = channel.SendBufferWithFence(handle, fence, userData: 2);
                }

                string[] timedOut = peer.Expect("FENCE-TIMEOUT");
                Assert.Equal(sequence.ToString(System.Globalization.CultureInfo.InvariantCulture), timedOut[0]);
                Assert.Equal(PeerTimeoutMs.ToString(System.Globalization.CultureInfo.InvariantCulture), timedOut[1]);
                Assert.Contains("vgem", string.Join(' ', timedOut[2..]), StringComparison.Ordinal);
                WaitForRelease(channel, sequence);
                _fences.Signal(second);
                Assert.Equal(3, channel.Statistics.FdsSent); // the buffer's descriptor once, and the two fences
            }

            string[] fds = peer.Expect("FDS");
            Assert.True(fds[2] == "0", $"the peer leaked {fds[2]} descriptors ({fds[0]} before, {fds[1]} after): {string.Join(' ', fds[3..])}");
            peer.Expect("END");
            Assert.Equal(0, peer.WaitForExit());
        }

        // No sync_file, dma-buf, socket or mapping left on this side (the runtime's own pipes for the child process are
        // not ours to count).
        string[] held = [.. before.HeldSince().Where(h => !h.Contains("pipe:", StringComparison.Ordinal))];
        Assert.True(held.Length == 0, $"leaked here: {string.Join("; ", held)}");
    }

    private uint AttachFence(DmaBufHandle handle) => _fences.Attach(handle, write: true);

    private static void WaitForRelease(BufferChannel channel, long sequence)
    {
        while (true)
        {
            ChannelMessage? m = channel.Receive(s_patience);
            Assert.NotNull(m);
            if (m is BufferReleased r && r.Sequence == sequence)
            {
                return;
            }
        }
    }
}

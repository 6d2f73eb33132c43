using System.Globalization;
using DmaBuf.Linux.TestPeer;
using DmaBuf.Testing;

namespace DmaBuf.Linux.Tests;

/// <summary>
/// Real dma-bufs (vgem, through DRM PRIME) between two real processes over the channel: the descriptor the peer gets
/// names the same kernel buffer (same <c>(st_dev, st_ino)</c>), CPU access on both sides is bracketed with
/// <c>DMA_BUF_IOCTL_SYNC</c>, and the name one process sets with <c>DMA_BUF_SET_NAME</c> is the name the other sees.
/// </summary>
[Trait(KernelRequirement.Trait, "vgem")]
public sealed class DmaBufCrossProcessTests : IDisposable
{
    private static readonly TimeSpan s_patience = TimeSpan.FromSeconds(120); // hang guards only (the guest is slow)
    private readonly DrmPrimeExporter _exporter = KernelRequirement.Vgem();

    public void Dispose() => _exporter.Dispose();

    [Fact]
    public void SentDmaBuf_KeepsItsIdentityInThePeer_AndThePeerReadsOurBytesInPlace()
    {
        using DmaBufHandle buffer = _exporter.Allocate(CrossProcessTests.Size, "sent-frame");

        CrossProcessTests.AssertPeerSeesOurBytesInPlace(buffer, LinuxBufferKind.DmaBuf, s_patience);
    }

    [Fact]
    public void DmaBufFromThePeer_IsOneBufferOfOurs_WithTheNameThePeerGaveIt()
    {
        string socket = ProcessResources.UniqueSocketName("dma-buf-import");
        var imports = new ImportCache(new MmapCache());
        using BufferChannelListener listener = BufferChannelListener.Listen(socket, new BufferChannelOptions { ImportCache = imports });
        using PeerProcess peer = PeerProcess.Start(
            "send", socket, "3", CrossProcessTests.Size.ToString(CultureInfo.InvariantCulture), "--exporter", "vgem");
        string[] sent = peer.Expect("SENT");
        using BufferChannel channel = listener.Accept(s_patience);
        ulong expected = Pattern.Checksum(CrossProcessTests.ExpectedPeerContent());
        var objects = new List<DmaBuffer>();

        for (int i = 0; i < 3; i++)
        {
            using var received = (ReceivedBuffer)channel.Receive(s_patience)!;
            LinuxBuffer linux = received.Handle.Buffer.GetLinuxBuffer();
            Assert.Equal(LinuxBufferKind.DmaBuf, linux.Kind);
            Assert.Equal(sent[0], linux.Identity.Device.ToString(CultureInfo.InvariantCulture));
            Assert.Equal(sent[1], linux.Identity.Inode.ToString(CultureInfo.InvariantCulture));
            Assert.Equal("peer-frame", KernelName(linux.Fd)); // set by the peer with DMA_BUF_SET_NAME
            using (CpuMapping map = received.Handle.MapCpu())
            {
                received.Handle.BeginCpuAccess(CpuAccess.Read);
                ulong sum = Pattern.Checksum(map.Span[..(int)CrossProcessTests.Size]);
                received.Handle.EndCpuAccess(CpuAccess.Read);
                Assert.Equal(expected, sum);
            }

            objects.Add(received.Handle.Buffer);
        }

        Assert.All(objects, o => Assert.Same(objects[0], o));
        Assert.Equal(1, imports.Misses);
        Assert.Equal(1, imports.Cache.Statistics.MapCalls);
        peer.Expect("END");
        Assert.Null(channel.Receive(s_patience));
        Assert.Equal(0, peer.WaitForExit());
        Assert.Equal(0, imports.Count);
    }

    /// <summary>The kernel's name of a dma-buf, from this process's fdinfo (the <c>name:</c> line).</summary>
    private static string? KernelName(SafeFdHandle fd) =>
        File.ReadLines($"/proc/self/fdinfo/{fd.Number}")
            .Where(l => l.StartsWith("name:", StringComparison.Ordinal))
            .Select(l => l["name:".Length..].Trim())
            .FirstOrDefault();
}

using System.Globalization;
using DmaBuf.Linux.TestPeer;

namespace DmaBuf.Linux.Tests;

/// <summary>The other side is a real second process (tests/DmaBuf.Linux.TestPeer), connected over an abstract socket.</summary>
public sealed class CrossProcessTests
{
    internal const long Size = 256 * 1024;
    private static readonly TimeSpan s_patience = TimeSpan.FromSeconds(30); // hang guards only

    [Fact]
    public void SentBuffer_KeepsItsIdentity_AndThePeerReadsOurBytesInPlace()
    {
        var exporter = new MemfdExporter(new MmapCache());
        using DmaBufHandle buffer = exporter.Allocate(Size, "shared");

        AssertPeerSeesOurBytesInPlace(buffer, LinuxBufferKind.Memfd, s_patience);
    }

    /// <summary>
    /// Sends <paramref name="buffer"/> twice to a receiving peer process, rewriting it in between, and asserts that the
    /// peer saw our identity, imported it as <paramref name="kind"/> once (one descriptor, one object) and read both
    /// contents in place: no copy was made.
    /// </summary>
    internal static void AssertPeerSeesOurBytesInPlace(DmaBufHandle buffer, LinuxBufferKind kind, TimeSpan patience)
    {
        string name = ProcessResources.UniqueSocketName("identity");
        using BufferChannelListener listener = BufferChannelListener.Listen(name);
        using PeerProcess peer = PeerProcess.Start("receive", name);
        using BufferChannel channel = listener.Accept(patience);
        peer.Expect("READY");
        FileIdentity ours = buffer.Buffer.GetLinuxBuffer().Identity;

        ulong firstSum = Fill(buffer, 1);
        channel.SendBuffer(buffer);
        string[] first = peer.Expect("RECV");
        ulong secondSum = Fill(buffer, 2); // rewrite in place: no copy was made, so the peer must see the new bytes
        channel.SendBuffer(buffer);
        string[] second = peer.Expect("RECV");

        Assert.Equal(peer.Id, channel.Peer.ProcessId);
        Assert.Equal(kind, buffer.Buffer.GetLinuxBuffer().Kind);
        Assert.Equal(kind.ToString(), first[7]); // what the peer imported it as
        Assert.Equal(ours.Device.ToString(CultureInfo.InvariantCulture), first[2]);
        Assert.Equal(ours.Inode.ToString(CultureInfo.InvariantCulture), first[3]);
        Assert.Equal(firstSum.ToString(CultureInfo.InvariantCulture), first[6]);
        Assert.Equal(secondSum.ToString(CultureInfo.InvariantCulture), second[6]);
        Assert.NotEqual(first[6], second[6]);
        Assert.Equal(["1", "0"], new[] { first[4], second[4] }); // the descriptor went once
        Assert.Equal(first[5], second[5]); // one imported object in the peer
        Assert.Equal(1, channel.Statistics.FdsSent);

        channel.Dispose();
        peer.Expect("END");
        Assert.Equal(0, peer.WaitForExit());
    }

    [Fact]
    public void Resending_OverTwoConnections_DedupesToOneObject()
    {
        string name = ProcessResources.UniqueSocketName("dedupe");
        var imports = new ImportCache(new MmapCache());
        using BufferChannelListener listener = BufferChannelListener.Listen(name, new BufferChannelOptions { ImportCache = imports });
        using PeerProcess peer = PeerProcess.Start("send", name, "3", Size.ToString(CultureInfo.InvariantCulture), "--connections", "2");
        string[] sent = peer.Expect("SENT");
        using BufferChannel a = listener.Accept(s_patience);
        using BufferChannel b = listener.Accept(s_patience);
        var objects = new List<DmaBuffer>();
        var carried = new List<bool>();

        foreach (BufferChannel channel in new[] { a, b })
        {
            for (int i = 0; i < 3; i++)
            {
                using var received = (ReceivedBuffer)channel.Receive(s_patience)!;
                FileIdentity id = received.Handle.Buffer.GetLinuxBuffer().Identity;
                Assert.Equal(sent[0], id.Device.ToString(CultureInfo.InvariantCulture));
                Assert.Equal(sent[1], id.Inode.ToString(CultureInfo.InvariantCulture));
                using (CpuMapping map = received.Handle.MapCpu())
                {
                    Assert.Equal(Pattern.Checksum(ExpectedPeerContent()), Pattern.Checksum(map.Span));
                }

                objects.Add(received.Handle.Buffer);
                carried.Add(received.CarriedFd);
            }
        }

        Assert.All(objects, o => Assert.Same(objects[0], o));
        Assert.Equal([true, false, false, true, false, false], carried);
        Assert.Equal(1, imports.Misses);
        Assert.Equal(1, imports.Cache.Statistics.MapCalls);
        peer.Expect("END");
        Assert.Null(a.Receive(s_patience));
        Assert.Null(b.Receive(s_patience));
        Assert.Equal(0, peer.WaitForExit());
        Assert.Equal(0, imports.Count);
    }

    [Fact]
    public void Release_FromThePeer_ReturnsTheBufferToThePool()
    {
        string name = ProcessResources.UniqueSocketName("pool");
        var exporter = new MemfdExporter(new MmapCache());
        using var pool = BufferPool.Allocate(exporter, 3, Size);
        using BufferChannelListener listener = BufferChannelListener.Listen(name, new BufferChannelOptions { ReturnTo = pool });
        using PeerProcess peer = PeerProcess.Start("receive", name);
        using BufferChannel channel = listener.Accept(s_patience);
        peer.Expect("READY");

        for (int frame = 0; frame < 9; frame++)
        {
            Assert.True(pool.TryRent(out DmaBufHandle? buffer));
            ulong sum = Fill(buffer, (ulong)frame);
            long seq = channel.SendBuffer(buffer);
            Assert.Equal(sum, ((BufferAcknowledged)channel.Receive(s_patience)!).UserData);
            var released = (BufferReleased)channel.Receive(s_patience)!;
            Assert.Equal((buffer.BufferId, seq, true), (released.BufferId, released.Sequence, released.ReturnedToPool));
            Assert.Equal(3, pool.Available);
        }

        Assert.Equal(3, channel.Statistics.FdsSent); // one per pool buffer, then ids only
    }

    [Fact]
    public void DeadReceiver_IsCleanedUp_AndItsBuffersReturnToThePool()
    {
        string name = ProcessResources.UniqueSocketName("dead-receiver");
        var exporter = new MemfdExporter(new MmapCache());
        using var pool = BufferPool.Allocate(exporter, 3, Size);
        using BufferChannelListener listener = BufferChannelListener.Listen(name, new BufferChannelOptions { ReturnTo = pool });
        ProcessSnapshot before = ProcessSnapshot.Take();
        using (PeerProcess peer = PeerProcess.Start("receive", name, "--hold"))
        {
            BufferChannel channel = listener.Accept(s_patience);
            peer.Expect("READY");
            for (int i = 0; i < 3; i++)
            {
                Assert.True(pool.TryRent(out DmaBufHandle? buffer));
                channel.SendBuffer(buffer);
                Assert.IsType<BufferAcknowledged>(channel.Receive(s_patience));
            }

            Assert.Equal(0, pool.Available);
            Assert.Equal(3, channel.SharedBuffers);

            peer.Kill(); // dies holding all three
            ChannelProtocolException e = Assert.Throws<ChannelProtocolException>(() => channel.Receive(s_patience));

            Assert.Equal(ChannelErrorReason.PeerClosed, e.Reason);
            Assert.Equal(3, pool.Available);
            Assert.Equal(0, channel.SharedBuffers);
            Assert.Equal(0, channel.OutstandingDeliveries);
            Assert.All(pool.Buffers, b => Assert.Equal(1, b.Buffer.ReferenceCount)); // only the pool holds them again
            channel.Dispose();
        }

        before.AssertNothingHeldSince("after the receiver died");
    }

    [Fact]
    public void DeadSender_IsCleanedUp_AndLeavesNoDescriptorOrMapping()
    {
        string name = ProcessResources.UniqueSocketName("dead-sender");
        var imports = new ImportCache(new MmapCache());
        using BufferChannelListener listener = BufferChannelListener.Listen(name, new BufferChannelOptions { ImportCache = imports });
        ProcessSnapshot before = ProcessSnapshot.Take();
        int mappingsBefore = ProcessResources.BufferMappings();
        using (PeerProcess peer = PeerProcess.Start("send", name, "2", Size.ToString(CultureInfo.InvariantCulture), "--no-goodbye"))
        using (BufferChannel channel = listener.Accept(s_patience))
        {
            for (int i = 0; i < 2; i++)
            {
                using var received = (ReceivedBuffer)channel.Receive(s_patience)!;
                using CpuMapping map = received.Handle.MapCpu();
                Assert.Equal(Pattern.Checksum(ExpectedPeerContent()), Pattern.Checksum(map.Span));
            }

            Assert.Equal(1, channel.RegisteredBuffers);
            Assert.Equal(1, ProcessResources.BufferMappings() - mappingsBefore); // the cached mapping of the peer's buffer

            ChannelProtocolException e = Assert.Throws<ChannelProtocolException>(() => channel.Receive(s_patience));

            Assert.Equal(ChannelErrorReason.PeerClosed, e.Reason);
            Assert.Equal(0, channel.RegisteredBuffers);
            Assert.Equal(0, imports.Count);
            Assert.Equal(0, imports.Cache.Statistics.LiveMappings);
            peer.WaitForExit();
        }

        before.AssertNothingHeldSince("after the sender died");
    }

    internal static ulong Fill(DmaBufHandle buffer, ulong seed)
    {
        using CpuMapping map = buffer.MapCpu();
        buffer.BeginCpuAccess(CpuAccess.Write);
        Pattern.Fill(map.Span, seed);
        buffer.EndCpuAccess(CpuAccess.Write);
        return Pattern.Checksum(map.Span);
    }

    internal static byte[] ExpectedPeerContent()
    {
        byte[] expected = new byte[Size];
        Pattern.Fill(expected, 42);
        return expected;
    }
}

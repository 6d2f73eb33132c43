namespace DmaBuf.Linux.Tests;

/// <summary>
/// A hostile peer and the fence that may come with a frame (<see cref="MessageFlags.FenceAttached"/>): a descriptor
/// that is not a sync_file, a flag without its descriptor, a descriptor without the flag. Each is refused with a typed
/// reason, closes only that connection, and leaks no descriptor.
/// </summary>
public sealed class HostileFenceTests
{
    private const long Size = 16 * 1024;

    private static readonly TimeSpan s_guard = Background<int>.Guard;

    [Fact]
    public void MemfdSentAsTheFence_IsRefusedAsNotASyncFile_AndNothingIsImported()
    {
        var imports = new ImportCache(new MmapCache());
        Leaks.AssertNone(() =>
        {
            using var peer = new RawPeer(imports);
            using SafeFdHandle buffer = RawPeer.SealedMemfd(Size);
            using SafeFdHandle notAFence = RawPeer.SealedMemfd(4096);
            peer.Send(RawPeer.Encode(new WireMessage(MessageType.Buffer, MessageFlags.FdAttached | MessageFlags.FenceAttached, 1, 1, Size)), buffer, notAFence);

            ChannelProtocolException e = Assert.Throws<ChannelProtocolException>(() => peer.Channel.Receive(s_guard));

            Assert.Equal(ChannelErrorReason.NotASyncFile, e.Reason);
            Assert.Contains("is not a sync_file", e.Message, StringComparison.Ordinal);
            Assert.Contains("memfd:", e.Message, StringComparison.Ordinal);
            Assert.Equal(ChannelErrorReason.NotASyncFile, peer.Channel.CloseReason);
            Assert.Equal(0, imports.Count); // refused before the buffer was imported
            Assert.Equal(0, peer.Channel.RegisteredBuffers);
        });
    }

    [Fact]
    public void MemfdSentAsTheFenceOfAnIdOnlyFrame_IsRefusedAsNotASyncFile()
    {
        var imports = new ImportCache(new MmapCache());
        Leaks.AssertNone(() =>
        {
            using var peer = new RawPeer(imports);
            using SafeFdHandle notAFence = RawPeer.SealedMemfd(4096);
            peer.Send(RawPeer.Encode(new WireMessage(MessageType.Buffer, MessageFlags.FenceAttached, 1, 1, Size)), notAFence);

            ChannelProtocolException e = Assert.Throws<ChannelProtocolException>(() => peer.Channel.Receive(s_guard));

            Assert.Equal(ChannelErrorReason.NotASyncFile, e.Reason);
        });
    }

    [Fact]
    public void FenceFlagWithoutItsDescriptor_IsAMissingDescriptor()
    {
        var imports = new ImportCache(new MmapCache());
        Leaks.AssertNone(() =>
        {
            using var peer = new RawPeer(imports);
            using SafeFdHandle buffer = RawPeer.SealedMemfd(Size);
            peer.Send(RawPeer.Encode(new WireMessage(MessageType.Buffer, MessageFlags.FdAttached | MessageFlags.FenceAttached, 1, 1, Size)), buffer);

            ChannelProtocolException e = Assert.Throws<ChannelProtocolException>(() => peer.Channel.Receive(s_guard));

            Assert.Equal(ChannelErrorReason.MissingFd, e.Reason);
            Assert.Contains("takes 2 descriptors; 1 came", e.Message, StringComparison.Ordinal);
            Assert.Equal(0, imports.Count);
        });
    }

    [Fact]
    public void FenceFlagOnAnIdOnlyFrameWithNoDescriptor_IsAMissingDescriptor()
    {
        Leaks.AssertNone(() =>
        {
            using var peer = new RawPeer(new ImportCache(new MmapCache()));
            peer.Send(RawPeer.Encode(new WireMessage(MessageType.Buffer, MessageFlags.FenceAttached, 1, 1, Size)));

            ChannelProtocolException e = Assert.Throws<ChannelProtocolException>(() => peer.Channel.Receive(s_guard));

            Assert.Equal(ChannelErrorReason.MissingFd, e.Reason);
            Assert.Contains("fence (sync_file) descriptor; none came", e.Message, StringComparison.Ordinal);
        });
    }

    [Fact]
    public void ASecondDescriptorWithoutTheFenceFlag_IsASurplus()
    {
        var imports = new ImportCache(new MmapCache());
        Leaks.AssertNone(() =>
        {
            using var peer = new RawPeer(imports);
            using SafeFdHandle buffer = RawPeer.SealedMemfd(Size);
            using SafeFdHandle extra = RawPeer.SealedMemfd(4096);
            peer.Send(RawPeer.Encode(new WireMessage(MessageType.Buffer, MessageFlags.FdAttached, 1, 1, Size)), buffer, extra);

            ChannelProtocolException e = Assert.Throws<ChannelProtocolException>(() => peer.Channel.Receive(s_guard));

            Assert.Equal(ChannelErrorReason.SurplusFds, e.Reason);
            Assert.Equal(0, imports.Count);
        });
    }

    [Fact]
    public void ADescriptorOnAnIdOnlyFrameWithoutTheFenceFlag_IsUnexpected()
    {
        Leaks.AssertNone(() =>
        {
            using var peer = new RawPeer(new ImportCache(new MmapCache()));
            using SafeFdHandle extra = RawPeer.SealedMemfd(4096);
            peer.Send(RawPeer.Encode(new WireMessage(MessageType.Buffer, MessageFlags.None, 1, 1, Size)), extra);

            ChannelProtocolException e = Assert.Throws<ChannelProtocolException>(() => peer.Channel.Receive(s_guard));

            Assert.Equal(ChannelErrorReason.UnexpectedFd, e.Reason);
        });
    }

    [Fact]
    public void AFrameWithoutAFence_HasNone_AndWaitForFenceReturnsAtOnce()
    {
        Leaks.AssertNone(() =>
        {
            (BufferChannel a, BufferChannel b) = BufferChannel.CreatePair();
            using (a)
            using (b)
            using (DmaBufHandle h = new MemfdExporter().Allocate(Size, "no-fence"))
            {
                a.SendBuffer(h, 7);
                using var got = (ReceivedBuffer)b.Receive(s_guard)!;
                Assert.Null(got.Fence);
                Assert.True(got.WaitForFence(TimeSpan.Zero));
            }
        });
    }
}

using System.Buffers.Binary;

namespace DmaBuf.Linux.Tests;

/// <summary>
/// A hostile or broken peer, played by a raw socket that sends arbitrary bytes and descriptors. Every case must end in a
/// <see cref="ChannelProtocolException"/> with its reason, close that connection only, and leak no descriptor and no
/// mapping (counted from /proc/self/fd and /proc/self/maps, and by the receiver's mmap cache).
/// </summary>
public sealed class UntrustedInputTests
{
    private const long Size = 16 * 1024;

    [Fact]
    public void ShortMessage_WrongSize() => AssertRefused(ChannelErrorReason.WrongSize, peer => peer.Send(new byte[8]));

    [Fact]
    public void LongerThanAnyMessage_WrongSize() => AssertRefused(ChannelErrorReason.WrongSize, peer =>
    {
        byte[] data = new byte[200];
        Header(MessageType.Ping).CopyTo(data, 0);
        peer.Send(data);
    });

    [Fact]
    public void LengthFieldDisagreesWithTheType_WrongSize() => AssertRefused(ChannelErrorReason.WrongSize, peer =>
    {
        byte[] data = Encode(new WireMessage(MessageType.Release, BufferId: 1, Sequence: 1));
        BinaryPrimitives.WriteUInt32LittleEndian(data.AsSpan(8), 24);
        peer.Send(data.AsSpan(0, 24).ToArray());
    });

    [Fact]
    public void BadMagic() => AssertRefused(ChannelErrorReason.BadMagic, peer =>
    {
        byte[] data = Header(MessageType.Ping);
        data[0] ^= 0xff;
        peer.Send(data);
    });

    [Fact]
    public void WrongVersion_UnsupportedVersion() => AssertRefused(ChannelErrorReason.UnsupportedVersion, peer =>
    {
        byte[] data = Header(MessageType.Ping);
        BinaryPrimitives.WriteUInt16LittleEndian(data.AsSpan(4), 2);
        peer.Send(data);
    });

    [Fact]
    public void UnknownType() => AssertRefused(ChannelErrorReason.UnknownMessageType, peer =>
    {
        byte[] data = Header(MessageType.Ping);
        BinaryPrimitives.WriteUInt16LittleEndian(data.AsSpan(6), 99);
        peer.Send(data);
    });

    [Fact]
    public void UnknownFlag_BadFlags() => AssertRefused(ChannelErrorReason.BadFlags, peer =>
        peer.Send(Encode(new WireMessage(MessageType.Buffer, (MessageFlags)0x80, BufferId: 1, Sequence: 1, Size: Size))));

    [Fact]
    public void BufferIdNeverSentWithItsFd_UnknownBufferId() => AssertRefused(ChannelErrorReason.UnknownBufferId, peer =>
        peer.Send(Encode(new WireMessage(MessageType.Buffer, BufferId: 777, Sequence: 1, Size: Size))));

    [Fact]
    public void ReleaseOfSomethingNeverSent_UnknownBufferId() => AssertRefused(ChannelErrorReason.UnknownBufferId, peer =>
        peer.Send(Encode(new WireMessage(MessageType.Release, BufferId: 777, Sequence: 3))));

    [Fact]
    public void ForgetOfAnUnknownId_UnknownBufferId() => AssertRefused(ChannelErrorReason.UnknownBufferId, peer =>
        peer.Send(Encode(new WireMessage(MessageType.Forget, BufferId: 777))));

    [Fact]
    public void FdFlagWithoutAnFd_MissingFd() => AssertRefused(ChannelErrorReason.MissingFd, peer =>
        peer.Send(BufferMessage(1)));

    [Fact]
    public void FdOnAMessageThatTakesNone_UnexpectedFd() => AssertRefused(ChannelErrorReason.UnexpectedFd, peer =>
    {
        using SafeFdHandle memfd = SealedMemfd(Size);
        peer.Send(Header(MessageType.Ping), memfd);
    });

    [Fact]
    public void Pipe_NotASharedBuffer() => AssertRefused(ChannelErrorReason.NotASharedBuffer, peer =>
    {
        (SafeFdHandle read, SafeFdHandle write) = Interop.Libc.Pipe();
        using (read)
        using (write)
        {
            peer.Send(BufferMessage(1), read);
        }
    });

    [Fact]
    public void RegularFile_NotASharedBuffer()
    {
        string path = Path.GetTempFileName();
        try
        {
            File.WriteAllBytes(path, new byte[Size]);
            AssertRefused(ChannelErrorReason.NotASharedBuffer, peer =>
            {
                using SafeFdHandle file = Interop.Libc.OpenReadWrite(path);
                peer.Send(BufferMessage(1), file);
            });
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void MemfdSmallerThanClaimed_BufferTooSmall() => AssertRefused(ChannelErrorReason.BufferTooSmall, peer =>
    {
        using SafeFdHandle memfd = SealedMemfd(Size / 4);
        peer.Send(BufferMessage(1), memfd);
    });

    [Fact]
    public void UnsealedMemfd_NotSealed() => AssertRefused(ChannelErrorReason.NotSealed, peer =>
    {
        using SafeFdHandle memfd = Interop.Libc.CreateMemfd("unsealed", Size);
        peer.Send(BufferMessage(1), memfd);
    });

    [Fact]
    public void TwoFdsOnOneBuffer_SurplusFds() => AssertRefused(ChannelErrorReason.SurplusFds, peer =>
    {
        using SafeFdHandle a = SealedMemfd(Size);
        using SafeFdHandle b = SealedMemfd(Size);
        peer.Send(BufferMessage(1), a, b);
    });

    [Fact]
    public void MoreFdsThanTheControlBufferHolds_CtruncClosesEveryFdReceived() => AssertRefused(ChannelErrorReason.SurplusFds, peer =>
    {
        SafeFdHandle[] many = [.. Enumerable.Range(0, 8).Select(_ => SealedMemfd(Size))];
        try
        {
            peer.Send(BufferMessage(1), many);
        }
        finally
        {
            Array.ForEach(many, f => f.Dispose());
        }
    });

    [Fact]
    public void SameIdRegisteredTwice_DuplicateBufferId() => AssertRefused(ChannelErrorReason.DuplicateBufferId, peer =>
    {
        using SafeFdHandle memfd = SealedMemfd(Size);
        peer.Send(BufferMessage(1), memfd);
        peer.Send(BufferMessage(1), memfd);
    }, expectDeliveries: 1);

    [Fact]
    public void PeerDiesHoldingRegistrations_PeerClosed() => AssertRefused(ChannelErrorReason.PeerClosed, peer =>
    {
        using SafeFdHandle memfd = SealedMemfd(Size);
        peer.Send(BufferMessage(1), memfd);
        peer.Send(BufferMessage(1, withFd: false, sequence: 2));
        peer.Die();
    }, expectDeliveries: 2);

    [Fact]
    public void AFailedConnection_LeavesOtherConnectionsWorking()
    {
        var imports = new ImportCache(new MmapCache());
        var exporter = new MemfdExporter(new MmapCache());
        using DmaBufHandle buffer = exporter.Allocate(Size);
        (BufferChannel goodSender, BufferChannel goodReceiver) = BufferChannel.CreatePair(second: new BufferChannelOptions { ImportCache = imports });
        using (goodSender)
        using (goodReceiver)
        {
            goodSender.SendBuffer(buffer);
            using var first = (ReceivedBuffer)goodReceiver.Receive()!;

            using (var peer = new RawPeer(imports))
            {
                peer.Send(Header(MessageType.Ping).AsSpan(0, 10).ToArray());
                Assert.Throws<ChannelProtocolException>(() => peer.Channel.Receive());
            }

            goodSender.SendBuffer(buffer);
            using var second = (ReceivedBuffer)goodReceiver.Receive()!;
            Assert.Same(first.Handle.Buffer, second.Handle.Buffer);
            Assert.False(goodReceiver.IsClosed);
        }
    }

    /// <summary>
    /// Runs the peer's misbehaviour against a fresh receiving channel and checks: the reason, the connection closed,
    /// nothing else delivered, and (over several rounds, after a warm-up) no descriptor or mapping left behind.
    /// </summary>
    private static void AssertRefused(ChannelErrorReason reason, Action<RawPeer> misbehave, int expectDeliveries = 0)
    {
        var imports = new ImportCache(new MmapCache());
        Leaks.AssertNone(() =>
        {
            using var peer = new RawPeer(imports);
            misbehave(peer);
            var delivered = new List<ReceivedBuffer>();
            void ReceiveUntilRefused()
            {
                while (true)
                {
                    var received = (ReceivedBuffer)peer.Channel.Receive(TimeSpan.FromSeconds(30))!;
                    using (CpuMapping map = received.Handle.MapCpu())
                    {
                        _ = map.Span[0]; // really mapped: the mapping must go too
                    }

                    delivered.Add(received);
                }
            }

            ChannelProtocolException e = Assert.Throws<ChannelProtocolException>(ReceiveUntilRefused);

            Assert.Equal(reason, e.Reason);
            Assert.Equal(expectDeliveries, delivered.Count);
            Assert.True(peer.Channel.IsClosed);
            Assert.Equal(reason, peer.Channel.CloseReason);
            Assert.Equal(0, peer.Channel.RegisteredBuffers);
            Assert.Null(peer.Channel.Receive()); // closed: the end, not another error
            delivered.ForEach(d => d.Dispose());
            Assert.Equal(0, imports.Count);
            Assert.Equal(0, imports.Cache.Statistics.LiveMappings);
        });
    }

    private static SafeFdHandle SealedMemfd(long size)
    {
        SafeFdHandle fd = Interop.Libc.CreateMemfd("peer", size);
        Interop.Libc.AddSeals(fd, MemfdExporter.Seals);
        return fd;
    }

    private static byte[] Encode(in WireMessage m)
    {
        byte[] data = new byte[WireFormat.SizeOf(m.Type)];
        WireFormat.Encode(m, data);
        return data;
    }

    private static byte[] Header(MessageType type) => Encode(new WireMessage(type));

    private static byte[] BufferMessage(long id, bool withFd = true, long sequence = 1) =>
        Encode(new WireMessage(MessageType.Buffer, withFd ? MessageFlags.FdAttached : MessageFlags.None, id, sequence, Size));
}

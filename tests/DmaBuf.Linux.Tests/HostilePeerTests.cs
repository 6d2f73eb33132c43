namespace DmaBuf.Linux.Tests;

/// <summary>
/// A peer that is not broken but hostile: it stops reading, talks after its goodbye, sends records of no bytes, or
/// offers huge sparse buffers. Every call on our side must return within its deadline, refuse what is not allowed
/// with a typed reason, and leak nothing.
/// </summary>
public sealed class HostilePeerTests
{
    private const long Size = 16 * 1024;

    private static readonly TimeSpan s_guard = Background<int>.Guard;
    private static readonly TimeSpan s_shortSend = TimeSpan.FromMilliseconds(200);

    [Fact]
    public void ZeroLengthRecord_FromALivePeer_IsRefused_NotTakenForTheEnd()
    {
        var imports = new ImportCache(new MmapCache());
        Leaks.AssertNone(() =>
        {
            using var peer = new RawPeer(imports);
            peer.Send([]);

            ChannelProtocolException e = Assert.Throws<ChannelProtocolException>(() => peer.Channel.Receive(s_guard));

            Assert.Equal(ChannelErrorReason.WrongSize, e.Reason);
            Assert.Contains("zero-length", e.Message, StringComparison.Ordinal);
            Assert.Equal(ChannelErrorReason.WrongSize, peer.Channel.CloseReason);
        });
    }

    [Fact]
    public void ZeroLengthRecord_IsNotAGoodbye_EvenWhenThePeerThenCloses()
    {
        using var peer = new RawPeer(new ImportCache(new MmapCache()));
        peer.Send([]);
        peer.Die();

        // Either the empty record is seen as such (WrongSize) or, the peer having gone, as its end without goodbye
        // (PeerClosed); never as a clean end.
        ChannelProtocolException e = Assert.Throws<ChannelProtocolException>(() => peer.Channel.Receive(s_guard));
        Assert.True(e.Reason is ChannelErrorReason.WrongSize or ChannelErrorReason.PeerClosed, e.Message);
        Assert.NotEqual(ChannelErrorReason.None, peer.Channel.CloseReason);
    }

    [Fact]
    public void MessageAfterGoodbye_IsRefused_NotProcessed()
    {
        var imports = new ImportCache(new MmapCache());
        Leaks.AssertNone(() =>
        {
            using var peer = new RawPeer(imports);
            using SafeFdHandle memfd = RawPeer.SealedMemfd(Size);
            peer.Send(RawPeer.Encode(new WireMessage(MessageType.Goodbye)));
            peer.Send(RawPeer.Encode(new WireMessage(MessageType.Buffer, MessageFlags.FdAttached, 1, 1, Size)), memfd);

            ChannelProtocolException e = Assert.Throws<ChannelProtocolException>(() => peer.Channel.Receive(s_guard));

            Assert.Equal(ChannelErrorReason.MessageAfterGoodbye, e.Reason);
            Assert.Equal(0, imports.Count); // the buffer after the goodbye was never imported
            Assert.Equal(0, peer.Channel.RegisteredBuffers);
        });
    }

    [Fact]
    public void PingAfterGoodbye_IsNotAnswered()
    {
        using var peer = new RawPeer(new ImportCache(new MmapCache()));
        peer.Send(RawPeer.Encode(new WireMessage(MessageType.Goodbye)));
        peer.Send(RawPeer.Encode(new WireMessage(MessageType.Ping)));

        ChannelProtocolException e = Assert.Throws<ChannelProtocolException>(() => peer.Channel.Receive(s_guard));

        Assert.Equal(ChannelErrorReason.MessageAfterGoodbye, e.Reason);
        Assert.Equal(0, peer.Channel.Statistics.MessagesSent); // no pong went out
    }

    [Fact]
    public void PeerThatNeverReads_SendBufferReturnsWithinItsDeadline_AndClosesTheConnection()
    {
        var exporter = new MemfdExporter(new MmapCache());
        using DmaBufHandle buffer = exporter.Allocate(Size);
        using var peer = new RawPeer(new BufferChannelOptions { ImportCache = new ImportCache(new MmapCache()), SendTimeout = s_shortSend });

        ChannelProtocolException e = Guarded(() => Assert.Throws<ChannelProtocolException>(void () =>
        {
            while (true)
            {
                peer.Channel.SendBuffer(buffer); // the peer never reads: the socket fills up
            }
        }));

        Assert.Equal(ChannelErrorReason.SendTimeout, e.Reason);
        Assert.True(peer.Channel.IsClosed);
        Assert.Equal(0, peer.Channel.SharedBuffers);
        Assert.Equal(0, peer.Channel.OutstandingDeliveries);
        Assert.True(peer.Channel.Statistics.MessagesSent > 1);
        Guarded(() => peer.Channel.Dispose());
    }

    [Fact]
    public void PeerThatPingsButNeverReads_ReceiveReturnsWithinItsDeadline()
    {
        using var peer = new RawPeer(new BufferChannelOptions { ImportCache = new ImportCache(new MmapCache()), SendTimeout = s_shortSend });
        var pinger = new Thread(() =>
        {
            try
            {
                for (int i = 0; i < 100_000; i++)
                {
                    peer.Send(RawPeer.Encode(new WireMessage(MessageType.Ping)));
                }
            }
            catch (LinuxErrorException)
            {
                // EPIPE once our side closed
            }
        });
        pinger.Start();

        ChannelProtocolException e = Guarded(() => Assert.Throws<ChannelProtocolException>(void () =>
        {
            while (true)
            {
                peer.Channel.Receive(s_guard); // answers every ping; the pongs pile up unread
            }
        }));

        Assert.Equal(ChannelErrorReason.SendTimeout, e.Reason);
        peer.Die();
        Assert.True(pinger.Join(s_guard));
    }

    [Fact]
    public void PeerThatStopsReading_ReleasingItsBuffersReturns_AndClosesTheConnection()
    {
        var exporter = new MemfdExporter(new MmapCache());
        using DmaBufHandle buffer = exporter.Allocate(Size);
        (BufferChannel sender, BufferChannel receiver) = BufferChannel.CreatePair(
            null, new BufferChannelOptions { ImportCache = new ImportCache(new MmapCache()), SendTimeout = s_shortSend });
        using (sender)
        using (receiver)
        {
            Guarded(() =>
            {
                // The sender sends on and never reads the releases the receiver sends back.
                while (!receiver.IsClosed)
                {
                    sender.SendBuffer(buffer);
                    if (receiver.Receive(s_guard) is ReceivedBuffer received)
                    {
                        received.Dispose(); // the release: must not hang
                    }
                }
            });

            Assert.Equal(ChannelErrorReason.SendTimeout, receiver.CloseReason);
            Assert.Equal(0, receiver.RegisteredBuffers);
        }
    }

    [Fact]
    public void SparseMemfds_CountAgainstTheResidentBudget_AndAreNotMadeResident()
    {
        const long Big = 64L << 20;
        var imports = new ImportCache(new MmapCache(1L << 30));
        using var peer = new RawPeer(new BufferChannelOptions { ImportCache = imports, MaxResidentBytes = 2 * Big + Size });
        using SafeFdHandle a = RawPeer.SealedMemfd(Big); // sparse: no page written
        using SafeFdHandle b = RawPeer.SealedMemfd(Big);
        using SafeFdHandle c = RawPeer.SealedMemfd(Big);
        peer.Send(RawPeer.Encode(new WireMessage(MessageType.Buffer, MessageFlags.FdAttached, 1, 1, Big)), a);
        peer.Send(RawPeer.Encode(new WireMessage(MessageType.Buffer, MessageFlags.FdAttached, 2, 2, Big)), b);
        peer.Send(RawPeer.Encode(new WireMessage(MessageType.Buffer, MessageFlags.FdAttached, 3, 3, Big)), c);

        using var first = (ReceivedBuffer)peer.Channel.Receive(s_guard)!;
        using (CpuMapping map = first.Handle.MapCpu())
        {
            // Mapped without MAP_POPULATE: the peer's 64 MiB stay sparse here.
            Assert.True(ProcessResources.ResidentKiB(map.Address) < 1024, $"{ProcessResources.ResidentKiB(map.Address)} KiB resident");
        }

        using var second = (ReceivedBuffer)peer.Channel.Receive(s_guard)!;
        ChannelProtocolException e = Assert.Throws<ChannelProtocolException>(() => peer.Channel.Receive(s_guard));

        Assert.Equal(ChannelErrorReason.ResidentBudget, e.Reason);
        Assert.Equal(2, imports.Misses); // the third was refused before it was imported
    }

    [Fact]
    public void TransientDeliveries_CountAgainstTheResidentBudgetWhileHeld()
    {
        var imports = new ImportCache(new MmapCache());
        using var peer = new RawPeer(new BufferChannelOptions { ImportCache = imports, MaxResidentBytes = 2 * Size });
        using SafeFdHandle memfd = RawPeer.SealedMemfd(Size);
        byte[] transient(long seq) => RawPeer.Encode(new WireMessage(MessageType.Buffer, MessageFlags.FdAttached | MessageFlags.Transient, 1, seq, Size));

        peer.Send(transient(1), memfd);
        peer.Send(transient(2), memfd);
        var one = (ReceivedBuffer)peer.Channel.Receive(s_guard)!;
        using var two = (ReceivedBuffer)peer.Channel.Receive(s_guard)!;
        one.Dispose(); // gives its bytes back
        peer.Send(transient(3), memfd);
        using var three = (ReceivedBuffer)peer.Channel.Receive(s_guard)!;
        peer.Send(transient(4), memfd);

        ChannelProtocolException e = Assert.Throws<ChannelProtocolException>(() => peer.Channel.Receive(s_guard));
        Assert.Equal(ChannelErrorReason.ResidentBudget, e.Reason);
    }

    private static T Guarded<T>(Func<T> action) => Background<T>.Run(action);

    private static void Guarded(Action action) => Background<int>.Run(() =>
    {
        action();
        return 0;
    });
}

namespace DmaBuf.Linux.Tests;

/// <summary>The ring transport: the same channel behaviour as the socket's, through the control ring.</summary>
public sealed class RingTransportTests
{
    private const long Size = 32 * 1024;
    private static readonly TimeSpan s_guard = Background<int>.Guard;

    public static TheoryData<RingWait> Waits => [RingWait.Spin, RingWait.Block, RingWait.Hybrid];

    [Theory]
    [MemberData(nameof(Waits))]
    public void FirstSendCarriesTheFd_LaterOnlyTheId_ReleasesReturnToThePool(RingWait wait)
    {
        using var pool = BufferPool.Allocate(new MemfdExporter(new MmapCache()), 1, Size);
        using var world = new RingWorld(wait, pool);
        Assert.Equal(ChannelTransport.Ring, world.Sender.Transport);
        Assert.True(pool.TryRent(out DmaBufHandle? a));

        var carried = new List<bool>();
        for (int i = 0; i < 5; i++)
        {
            long seq = world.Sender.SendBuffer(a, userData: (ulong)i);
            using (var received = (ReceivedBuffer)world.Receiver.Receive(s_guard)!)
            {
                carried.Add(received.CarriedFd);
                Assert.Equal((a.BufferId, seq, (ulong)i), (received.RemoteBufferId, received.Sequence, received.UserData));
                Assert.Equal(a.Buffer.GetLinuxBuffer().Identity, received.Handle.Buffer.GetLinuxBuffer().Identity);
                world.Receiver.Acknowledge(received, 7);
            }

            var ack = (BufferAcknowledged)world.Sender.Receive(s_guard)!;
            Assert.Equal((seq, 7UL), (ack.Sequence, ack.UserData));
            var released = (BufferReleased)world.Sender.Receive(s_guard)!;
            Assert.Equal((a.BufferId, seq, true), (released.BufferId, released.Sequence, released.ReturnedToPool));
            Assert.True(pool.TryRent(out DmaBufHandle? again));
            a = again;
        }

        Assert.Equal([true, false, false, false, false], carried);
        Assert.Equal(1, world.Sender.Statistics.FdsSent);
        Assert.Equal(1, world.Receiver.RegisteredBuffers);
        Assert.Equal(0, world.Sender.OutstandingDeliveries);
    }

    [Theory]
    [MemberData(nameof(Waits))]
    public void AReceiverWaitingOnAnotherThread_IsWokenByASend(RingWait wait)
    {
        using var world = new RingWorld(wait);
        using DmaBufHandle buffer = world.Exporter.Allocate(Size);
        for (int i = 0; i < 20; i++)
        {
            var receiving = Background<ChannelMessage?>.Start(() => world.Receiver.Receive(s_guard));
            Thread.Sleep(i % 3); // sometimes before it sleeps, sometimes after
            world.Sender.SendBuffer(buffer, userData: (ulong)i);
            using var received = (ReceivedBuffer)receiving.Result!;
            Assert.Equal((ulong)i, received.UserData);
        }

        if (wait == RingWait.Block)
        {
            Assert.True(world.Sender.WakeUpsSent > 0, "a sleeping receiver was never signalled");
        }
    }

    [Theory]
    [InlineData(RingWait.Block)]
    [InlineData(RingWait.Hybrid)]
    public void ASenderWaitingForRoomInAFullRing_IsSignalledWhenTheReceiverConsumes(RingWait wait)
    {
        using var world = new RingWorld(wait);
        using DmaBufHandle buffer = world.Exporter.Allocate(Size);
        int count = ChannelRing.Capacity + 8;
        var sending = Background<int>.Start(() =>
        {
            for (int i = 0; i < count; i++)
            {
                world.Sender.SendBuffer(buffer, userData: (ulong)i);
            }

            return count;
        });

        // The ring fills: the send after the last entry that fits waits for room (begun, so outstanding).
        SpinWait.SpinUntil(() => world.Sender.OutstandingDeliveries > ChannelRing.Capacity, s_guard);
        Assert.Equal(ChannelRing.Capacity + 1, world.Sender.OutstandingDeliveries);
        Thread.Sleep(20); // past the spin budget: the sender sleeps on its eventfd now
        Assert.Equal(0, world.Receiver.WakeUpsSent);

        var received = new List<ReceivedBuffer>();
        try
        {
            for (int i = 0; i < count; i++)
            {
                var r = (ReceivedBuffer)world.Receiver.Receive(s_guard)!;
                Assert.Equal((ulong)i, r.UserData);
                received.Add(r);
            }

            Assert.Equal(count, sending.Result);
            Assert.True(world.Receiver.WakeUpsSent >= 1, "the receiver never signalled the sender waiting for room");
        }
        finally
        {
            var releases = Background<int>.Start(() =>
            {
                int n = 0;
                while (n < received.Count && world.Sender.Receive(s_guard) is { } m)
                {
                    n += m is BufferReleased ? 1 : 0;
                }

                return n;
            });
            received.ForEach(r => r.Dispose());
            Assert.Equal(received.Count, releases.Result);
        }
    }

    [Fact]
    public void Forget_ThenSendAgain_CarriesTheFdAgain_InOrder()
    {
        using var world = new RingWorld(RingWait.Hybrid);
        using DmaBufHandle buffer = world.Exporter.Allocate(Size);
        world.Sender.SendBuffer(buffer);
        Assert.True(world.Sender.Forget(buffer.BufferId));
        world.Sender.SendBuffer(buffer);

        using var first = (ReceivedBuffer)world.Receiver.Receive(s_guard)!;
        using var second = (ReceivedBuffer)world.Receiver.Receive(s_guard)!; // the forget, between, was handled

        Assert.True(first.CarriedFd);
        Assert.True(second.CarriedFd);
        Assert.Equal(1, world.Receiver.RegisteredBuffers);
    }

    [Fact]
    public void Ping_IsAnsweredOverTheSocket_WhileThePeerWaitsOnTheRing()
    {
        using var world = new RingWorld(RingWait.Block);
        var answering = Background<ChannelMessage?>.Start(() => world.Receiver.Receive(s_guard));
        world.Sender.Ping(s_guard);
        world.Sender.Dispose();
        Assert.Null(answering.Result); // the goodbye through the ring, then the socket's end: a clean end
        Assert.Equal(ChannelErrorReason.None, world.Receiver.CloseReason);
    }

    [Fact]
    public void Dispose_SaysGoodbyeThroughTheRing_ThePeerEndsCleanly_AndNothingLeaks()
    {
        Leaks.AssertNone(() =>
        {
            using var world = new RingWorld(RingWait.Hybrid);
            using DmaBufHandle buffer = world.Exporter.Allocate(Size);
            world.Sender.SendBuffer(buffer);
            world.Sender.Dispose();

            using var received = (ReceivedBuffer)world.Receiver.Receive(s_guard)!;
            Assert.Null(world.Receiver.Receive(s_guard));
            Assert.Equal(ChannelErrorReason.None, world.Receiver.CloseReason);
        });
    }

    [Fact]
    public void RingSide_AgainstASocketSide_IsRefusedWithATypedReason()
    {
        (SafeFdHandle a, SafeFdHandle b) = Interop.Libc.SocketPair(Interop.Libc.SOCK_SEQPACKET);
        using BufferChannel socketSide = BufferChannel.FromSocket(b);
        var opts = new BufferChannelOptions { Transport = ChannelTransport.Ring, SendTimeout = TimeSpan.FromMilliseconds(200) };

        ChannelProtocolException e = Assert.Throws<ChannelProtocolException>(() => BufferChannel.FromSocket(a, opts));
        Assert.Equal(ChannelErrorReason.RingCorrupt, e.Reason);

        // The socket side sees the ring's setup and refuses it, typed too.
        ChannelProtocolException s = Assert.Throws<ChannelProtocolException>(() => socketSide.Receive(s_guard));
        Assert.Equal(ChannelErrorReason.RingCorrupt, s.Reason);
    }

    [Fact]
    public void CreatePair_OfDifferentTransports_IsAnArgumentError()
    {
        Assert.Throws<ArgumentException>(() => BufferChannel.CreatePair(new BufferChannelOptions { Transport = ChannelTransport.Ring }, null));
    }

    internal sealed class RingWorld : IDisposable
    {
        public RingWorld(RingWait wait, BufferPool? pool = null)
        {
            Exporter = new MemfdExporter(new MmapCache());
            (Sender, Receiver) = BufferChannel.CreatePair(
                new BufferChannelOptions { ReturnTo = pool, Transport = ChannelTransport.Ring, Wait = wait },
                new BufferChannelOptions { ImportCache = new ImportCache(new MmapCache()), Transport = ChannelTransport.Ring, Wait = wait });
        }

        public MemfdExporter Exporter { get; }

        public BufferChannel Sender { get; }

        public BufferChannel Receiver { get; }

        public void Dispose()
        {
            Sender.Dispose();
            Receiver.Dispose();
        }
    }
}

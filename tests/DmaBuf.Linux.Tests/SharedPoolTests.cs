namespace DmaBuf.Linux.Tests;

/// <summary>
/// One <see cref="BufferPool"/> behind several channels (a listener's accepted connections share its options, and so
/// its pool), and one frame sent to several consumers. "A buffer goes back to the pool when the peer releases it or
/// goes away" must mean every peer it went to: before, the first consumer's release returned the frame, the producer
/// rented it again and overwrote it while the second consumer still read it (an outside review).
/// </summary>
public sealed class SharedPoolTests
{
    private const long Size = 4096;

    private static readonly TimeSpan s_guard = Background<int>.Guard;

    [Theory]
    [InlineData(ChannelTransport.Socket)]
    [InlineData(ChannelTransport.Ring)]
    public void AFrameSentToTwoConsumers_ComesBackOnlyWhenBothReleased(ChannelTransport transport)
    {
        using var fanOut = new FanOut(transport, poolSize: 1);
        Assert.True(fanOut.Pool.TryRent(out DmaBufHandle? frame));
        fanOut.ToA.SendBuffer(frame);
        fanOut.ToB.SendBuffer(frame);
        ReceivedBuffer atA = fanOut.ReceiveAtA();
        ReceivedBuffer atB = fanOut.ReceiveAtB();

        atA.Dispose();
        var first = Assert.IsType<BufferReleased>(fanOut.ToA.Receive(s_guard));
        Assert.False(first.ReturnedToPool, "consumer B still holds the frame; it must not go back to the pool");
        Assert.True(fanOut.Pool.IsRented(frame.BufferId));
        Assert.False(fanOut.Pool.TryRent(out _), "the only frame was rented again while consumer B read it");

        atB.Dispose();
        var last = Assert.IsType<BufferReleased>(fanOut.ToB.Receive(s_guard));
        Assert.True(last.ReturnedToPool);
        Assert.Equal(1, fanOut.Pool.Available);
    }

    /// <summary>
    /// The first consumer may release before the producer's send to the second: a caller's <see cref="BufferPool.Hold"/>
    /// keeps the frame rented across the sends, and its <see cref="BufferPool.Return"/> lets go.
    /// </summary>
    [Fact]
    public void AHoldAroundTheSends_KeepsTheFrameRented_WhenTheFirstConsumerReleasesBeforeTheSecondSend()
    {
        using var fanOut = new FanOut(ChannelTransport.Socket, poolSize: 1);
        Assert.True(fanOut.Pool.TryRent(out DmaBufHandle? frame));
        Assert.True(fanOut.Pool.Hold(frame.BufferId));
        fanOut.ToA.SendBuffer(frame);
        fanOut.ReceiveAtA().Dispose();
        Assert.False(Assert.IsType<BufferReleased>(fanOut.ToA.Receive(s_guard)).ReturnedToPool);
        Assert.True(fanOut.Pool.IsRented(frame.BufferId), "A's release returned the frame under the producer's hold");

        fanOut.ToB.SendBuffer(frame);
        Assert.True(fanOut.Pool.Return(frame.BufferId)); // the producer's hold goes; B's delivery still holds the frame
        Assert.True(fanOut.Pool.IsRented(frame.BufferId));
        fanOut.ReceiveAtB().Dispose();
        Assert.True(Assert.IsType<BufferReleased>(fanOut.ToB.Receive(s_guard)).ReturnedToPool);
        Assert.Equal(1, fanOut.Pool.Available);
    }

    /// <summary>A consumer that goes away lets go of its deliveries only; the other consumer's hold stays.</summary>
    [Fact]
    public void AConsumerThatGoesAway_LetsGoOfItsHoldOnly()
    {
        using var fanOut = new FanOut(ChannelTransport.Socket, poolSize: 1);
        Assert.True(fanOut.Pool.TryRent(out DmaBufHandle? frame));
        fanOut.ToA.SendBuffer(frame);
        fanOut.ToB.SendBuffer(frame);
        ReceivedBuffer atB = fanOut.ReceiveAtB();

        fanOut.ToA.Dispose(); // A's connection closes with the delivery out: close lets go of A's hold
        Assert.True(fanOut.Pool.IsRented(frame.BufferId), "A's close returned the frame while B still reads it");

        atB.Dispose();
        Assert.True(Assert.IsType<BufferReleased>(fanOut.ToB.Receive(s_guard)).ReturnedToPool);
        Assert.Equal(1, fanOut.Pool.Available);
    }

    /// <summary>
    /// The renter's own give-back cannot drop a channel's hold: a <see cref="BufferPool.Return"/> of a frame out with a
    /// peer (without a <see cref="BufferPool.Hold"/>) changes nothing and says so.
    /// </summary>
    [Fact]
    public void ReturnOfAFrameOutWithAPeer_WithoutAHold_ChangesNothing()
    {
        using var fanOut = new FanOut(ChannelTransport.Socket, poolSize: 1);
        Assert.True(fanOut.Pool.TryRent(out DmaBufHandle? frame));
        fanOut.ToA.SendBuffer(frame);
        Assert.False(fanOut.Pool.Return(frame.BufferId));
        Assert.True(fanOut.Pool.IsRented(frame.BufferId));
        Assert.Equal(0, fanOut.Pool.Available);

        fanOut.ReceiveAtA().Dispose();
        Assert.True(Assert.IsType<BufferReleased>(fanOut.ToA.Receive(s_guard)).ReturnedToPool);
    }

    /// <summary>
    /// Sending a pool buffer that is not rented would hand the peer a frame another renter may be writing: refused,
    /// nothing sent, the connection open.
    /// </summary>
    [Fact]
    public void SendingAPoolBufferThatIsNotRented_IsRefused_AndTheConnectionStaysOpen()
    {
        using var fanOut = new FanOut(ChannelTransport.Socket, poolSize: 2);
        DmaBufHandle idle = fanOut.Pool.Buffers[0];
        var e = Assert.Throws<InvalidOperationException>(() => fanOut.ToA.SendBuffer(idle));
        Assert.Contains("not rented", e.Message, StringComparison.Ordinal);
        Assert.False(fanOut.ToA.IsClosed);
        Assert.Equal(0, fanOut.ToA.OutstandingDeliveries);
        Assert.Equal(2, fanOut.Pool.Available);

        Assert.True(fanOut.Pool.TryRent(out DmaBufHandle? frame));
        fanOut.ToA.SendBuffer(frame);
        fanOut.ReceiveAtA().Dispose();
        Assert.True(Assert.IsType<BufferReleased>(fanOut.ToA.Receive(s_guard)).ReturnedToPool);
    }

    /// <summary>A renter that does not send gives the frame back with Return, as before.</summary>
    [Fact]
    public void AFrameNeverSent_GoesBackOnReturn()
    {
        using var fanOut = new FanOut(ChannelTransport.Socket, poolSize: 1);
        Assert.True(fanOut.Pool.TryRent(out DmaBufHandle? frame));
        Assert.True(fanOut.Pool.Return(frame.BufferId));
        Assert.Equal(1, fanOut.Pool.Available);
        Assert.False(fanOut.Pool.Return(frame.BufferId), "returned twice");
    }

    /// <summary>A producer with two consumer connections on one pool (as a listener's accepted channels are).</summary>
    private sealed class FanOut : IDisposable
    {
        private readonly BufferChannel _a;
        private readonly BufferChannel _b;

        public FanOut(ChannelTransport transport, int poolSize)
        {
            Pool = BufferPool.Allocate(new MemfdExporter(new MmapCache()), poolSize, Size);
            var imports = new ImportCache(new MmapCache());
            (ToA, _a) = BufferChannel.CreatePair(
                new BufferChannelOptions { ReturnTo = Pool, Transport = transport },
                new BufferChannelOptions { ImportCache = imports, Transport = transport });
            (ToB, _b) = BufferChannel.CreatePair(
                new BufferChannelOptions { ReturnTo = Pool, Transport = transport },
                new BufferChannelOptions { ImportCache = new ImportCache(new MmapCache()), Transport = transport });
        }

        public BufferPool Pool { get; }

        public BufferChannel ToA { get; }

        public BufferChannel ToB { get; }

        public ReceivedBuffer ReceiveAtA() => Assert.IsType<ReceivedBuffer>(_a.Receive(s_guard));

        public ReceivedBuffer ReceiveAtB() => Assert.IsType<ReceivedBuffer>(_b.Receive(s_guard));

        public void Dispose()
        {
            ToA.Dispose();
            ToB.Dispose();
            _a.Dispose();
            _b.Dispose();
            Pool.Dispose();
        }
    }
}

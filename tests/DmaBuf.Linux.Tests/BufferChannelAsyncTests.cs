namespace DmaBuf.Linux.Tests;

/// <summary>The asynchronous API of the channel, on both transports.</summary>
public sealed class BufferChannelAsyncTests
{
    private const long Size = 32 * 1024;
    private static readonly TimeSpan s_guard = Background<int>.Guard;

    public static TheoryData<ChannelTransport, RingWait> Transports =>
        new() { { ChannelTransport.Socket, RingWait.Hybrid }, { ChannelTransport.Ring, RingWait.Hybrid }, { ChannelTransport.Ring, RingWait.Block } };

    [Theory]
    [MemberData(nameof(Transports))]
    public void ReceiveAsync_AwaitingBeforeTheSend_GetsTheBuffer_AndLeaksNothing(ChannelTransport transport, RingWait wait)
    {
        var imports = new ImportCache(new MmapCache());
        Leaks.AssertNone(() =>
        {
            using var world = new World(transport, wait, imports);
            using DmaBufHandle buffer = world.Exporter.Allocate(Size);
            for (int i = 0; i < 5; i++)
            {
                ValueTask<ChannelMessage?> receiving = world.Receiver.ReceiveAsync(TestContext.Current.CancellationToken);
                Thread.Sleep(i % 3); // sometimes before it waits, sometimes after
                world.Sender.SendBuffer(buffer, userData: (ulong)i);
                using var received = (ReceivedBuffer)Await(receiving)!;
                Assert.Equal((buffer.BufferId, (ulong)i, i == 0), (received.RemoteBufferId, received.UserData, received.CarriedFd));
            }
        });
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public void ReceiveAsync_Cancelled_LeavesTheChannelUsable(ChannelTransport transport, RingWait wait)
    {
        using var world = new World(transport, wait);
        using DmaBufHandle buffer = world.Exporter.Allocate(Size);
        using (var cancel = new CancellationTokenSource())
        {
            ValueTask<ChannelMessage?> pending = world.Receiver.ReceiveAsync(cancel.Token);
            Thread.Sleep(20); // waiting for readiness by now
            Assert.False(pending.IsCompleted);
            cancel.Cancel();
            Assert.ThrowsAny<OperationCanceledException>(() => Await(pending));
        }

        world.Sender.SendBuffer(buffer, userData: 42);
        using var received = (ReceivedBuffer)Await(world.Receiver.ReceiveAsync(TestContext.Current.CancellationToken))!;
        Assert.Equal((42UL, true), (received.UserData, received.CarriedFd));
        Assert.False(world.Receiver.IsClosed);
    }

    [Theory]
    [InlineData(ChannelTransport.Socket)]
    [InlineData(ChannelTransport.Ring)]
    public async Task ManyChannelsAwaiting_DoNotHoldAThreadEach(ChannelTransport transport)
    {
        const int channels = 64;
        var worlds = new List<World>();
        try
        {
            for (int i = 0; i < channels; i++)
            {
                worlds.Add(new World(transport, RingWait.Hybrid));
            }

            // Warm up: the first async wait starts the runtime's socket engine or the readiness poller.
            using (DmaBufHandle warm = worlds[0].Exporter.Allocate(Size))
            {
                ValueTask<ChannelMessage?> first = worlds[0].Receiver.ReceiveAsync(TestContext.Current.CancellationToken);
                worlds[0].Sender.SendBuffer(warm);
                using var got = (ReceivedBuffer)(await first)!;
            }

            int before = ThreadCount();
            var receives = worlds.Select(w => w.Receiver.ReceiveAsync(TestContext.Current.CancellationToken).AsTask()).ToList();
            await Task.Delay(300, TestContext.Current.CancellationToken); // every receive is waiting now
            int during = ThreadCount();
            Assert.All(receives, r => Assert.False(r.IsCompleted));
            Assert.True(during - before < 16, $"{channels} pending receives took the process from {before} to {during} threads");

            var buffers = worlds.Select(w => w.Exporter.Allocate(Size)).ToList();
            try
            {
                for (int i = 0; i < channels; i++)
                {
                    worlds[i].Sender.SendBuffer(buffers[i], userData: (ulong)i);
                }

                ChannelMessage?[] results = await Task.WhenAll(receives).WaitAsync(s_guard, TestContext.Current.CancellationToken);
                for (int i = 0; i < channels; i++)
                {
                    using var r = (ReceivedBuffer)results[i]!;
                    Assert.Equal((ulong)i, r.UserData);
                }
            }
            finally
            {
                buffers.ForEach(b => b.Dispose());
            }
        }
        finally
        {
            worlds.ForEach(w => w.Dispose());
        }
    }

    [Fact]
    public void PeerDiesWhileAwaiting_Socket_IsPeerClosed_AndLeaksNothing()
    {
        var imports = new ImportCache(new MmapCache());
        Leaks.AssertNone(() =>
        {
            using var peer = new RawPeer(imports);
            ValueTask<ChannelMessage?> pending = peer.Channel.ReceiveAsync(TestContext.Current.CancellationToken);
            Thread.Sleep(10);
            peer.Die();
            ChannelProtocolException e = Assert.Throws<ChannelProtocolException>(() => Await(pending));
            Assert.Equal(ChannelErrorReason.PeerClosed, e.Reason);
            Assert.True(peer.Channel.IsClosed);
        });
    }

    [Fact]
    public void PeerDiesWhileAwaiting_Ring_IsPeerClosed_AndLeaksNothing()
    {
        var imports = new ImportCache(new MmapCache());
        Leaks.AssertNone(() =>
        {
            using var peer = new RawRingPeer(imports);
            ValueTask<ChannelMessage?> pending = peer.Channel.ReceiveAsync(TestContext.Current.CancellationToken);
            Thread.Sleep(10);
            peer.Die();
            ChannelProtocolException e = Assert.Throws<ChannelProtocolException>(() => Await(pending));
            Assert.Equal(ChannelErrorReason.PeerClosed, e.Reason);
            Assert.True(peer.Channel.IsClosed);
        });
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public void DisposeWhileAwaiting_EndsTheReceiveWithNull(ChannelTransport transport, RingWait wait)
    {
        using var world = new World(transport, wait);
        ValueTask<ChannelMessage?> pending = world.Receiver.ReceiveAsync(TestContext.Current.CancellationToken);
        Thread.Sleep(10);
        Await(world.Receiver.DisposeAsync());
        Assert.Null(Await(pending));
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task ReadAllAsync_YieldsEveryBuffer_UntilThePeerSaysGoodbye(ChannelTransport transport, RingWait wait)
    {
        using var world = new World(transport, wait);
        using DmaBufHandle a = world.Exporter.Allocate(Size);
        using DmaBufHandle b = world.Exporter.Allocate(Size);
        Task sending = Task.Run(
            async () =>
            {
                for (int i = 0; i < 10; i++)
                {
                    await world.Sender.SendBufferAsync(i % 2 == 0 ? a : b, userData: (ulong)i, cancellationToken: TestContext.Current.CancellationToken);
                }

                for (int released = 0; released < 10;)
                {
                    if (await world.Sender.ReceiveAsync(TestContext.Current.CancellationToken) is BufferReleased)
                    {
                        released++;
                    }
                }

                await world.Sender.DisposeAsync(); // goodbye, once the peer released everything
            },
            TestContext.Current.CancellationToken);

        var seen = new List<ulong>();
        await foreach (ReceivedBuffer r in world.Receiver.ReadAllAsync(TestContext.Current.CancellationToken))
        {
            using (r)
            {
                seen.Add(r.UserData);
            }
        }

        await sending;
        Assert.Equal([0UL, 1, 2, 3, 4, 5, 6, 7, 8, 9], seen);
        Assert.True(world.Receiver.IsClosed);
        Assert.Equal(ChannelErrorReason.None, world.Receiver.CloseReason);
    }

    [Fact]
    public void SendBufferAsync_CancelledBefore_SendsNothing()
    {
        using var world = new World(ChannelTransport.Socket, RingWait.Hybrid);
        using DmaBufHandle buffer = world.Exporter.Allocate(Size);
        using var cancel = new CancellationTokenSource();
        cancel.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => Await(world.Sender.SendBufferAsync(buffer, cancellationToken: cancel.Token)));
        Assert.Equal(0, world.Sender.Statistics.MessagesSent);
        Assert.Throws<TimeoutException>(() => world.Receiver.Receive(TimeSpan.FromMilliseconds(50)));
    }

    private static T Await<T>(ValueTask<T> task) => task.AsTask().WaitAsync(s_guard).GetAwaiter().GetResult();

    private static void Await(ValueTask task) => task.AsTask().WaitAsync(s_guard).GetAwaiter().GetResult();

    private static int ThreadCount() =>
        int.Parse(File.ReadLines("/proc/self/status").First(l => l.StartsWith("Threads:", StringComparison.Ordinal))[8..].Trim(), System.Globalization.CultureInfo.InvariantCulture);

    private sealed class World : IDisposable
    {
        public World(ChannelTransport transport, RingWait wait, ImportCache? imports = null)
        {
            Exporter = new MemfdExporter(new MmapCache());
            (Sender, Receiver) = BufferChannel.CreatePair(
                new BufferChannelOptions { Transport = transport, Wait = wait },
                new BufferChannelOptions { ImportCache = imports ?? new ImportCache(new MmapCache()), Transport = transport, Wait = wait });
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

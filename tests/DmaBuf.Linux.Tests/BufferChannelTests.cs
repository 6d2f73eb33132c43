namespace DmaBuf.Linux.Tests;

public sealed class BufferChannelTests
{
    private const long Size = 32 * 1024;

    [Fact]
    public void SendBuffer_FirstSendCarriesTheFd_LaterSendsOnlyTheId_AndTheReceiverGetsOneObject()
    {
        using var world = new World();
        using DmaBufHandle buffer = world.Exporter.Allocate(Size);

        var deliveries = new List<ReceivedBuffer>();
        for (int i = 0; i < 3; i++)
        {
            world.Sender.SendBuffer(buffer, userData: (ulong)i);
            deliveries.Add((ReceivedBuffer)world.Receiver.Receive()!);
        }

        Assert.Equal([true, false, false], deliveries.Select(d => d.CarriedFd));
        Assert.Equal([0UL, 1UL, 2UL], deliveries.Select(d => d.UserData));
        Assert.All(deliveries, d => Assert.Same(deliveries[0].Handle.Buffer, d.Handle.Buffer));
        Assert.Equal(1, world.Sender.Statistics.FdsSent);
        Assert.Equal(1, world.Receiver.Statistics.FdsReceived);
        Assert.Equal(1, world.Sender.SharedBuffers);
        Assert.Equal(1, world.Receiver.RegisteredBuffers);
        Assert.Equal(buffer.Buffer.GetLinuxBuffer().Identity, deliveries[0].Handle.Buffer.GetLinuxBuffer().Identity);
        deliveries.ForEach(d => d.Dispose());
    }

    [Fact]
    public void Release_ReturnsTheBufferToTheSendersPool()
    {
        using var pool = BufferPool.Allocate(new MemfdExporter(new MmapCache()), 2, Size);
        using var world = new World(pool);
        Assert.True(pool.TryRent(out DmaBufHandle? a));
        Assert.True(pool.TryRent(out DmaBufHandle? b));
        long seqA = world.Sender.SendBuffer(a);
        world.Sender.SendBuffer(b);
        Assert.Equal(0, pool.Available);
        var receivedA = (ReceivedBuffer)world.Receiver.Receive()!;
        using var receivedB = (ReceivedBuffer)world.Receiver.Receive()!;

        receivedA.Dispose();
        var released = (BufferReleased)world.Sender.Receive()!;

        Assert.Equal((a.BufferId, seqA, true), (released.BufferId, released.Sequence, released.ReturnedToPool));
        Assert.Equal(1, pool.Available);
        Assert.False(pool.IsRented(a.BufferId));
        Assert.True(pool.IsRented(b.BufferId));
        Assert.Equal(1, world.Sender.OutstandingDeliveries);
    }

    [Fact]
    public void Acknowledge_CarriesTheReceiversData()
    {
        using var world = new World();
        using DmaBufHandle buffer = world.Exporter.Allocate(Size);
        long seq = world.Sender.SendBuffer(buffer);
        using var received = (ReceivedBuffer)world.Receiver.Receive()!;

        world.Receiver.Acknowledge(received, 0xfeed);
        var ack = (BufferAcknowledged)world.Sender.Receive()!;

        Assert.Equal((buffer.BufferId, seq, 0xfeedUL), (ack.BufferId, ack.Sequence, ack.UserData));
    }

    [Fact]
    public void Acknowledge_OfABufferFromAnotherChannel_IsRefused()
    {
        using var world = new World();
        using var other = new World();
        using DmaBufHandle buffer = world.Exporter.Allocate(Size);
        world.Sender.SendBuffer(buffer);
        using var received = (ReceivedBuffer)world.Receiver.Receive()!;

        Assert.Throws<ArgumentException>(() => other.Receiver.Acknowledge(received));
    }

    [Fact]
    public async Task Ping_IsAnsweredWhileTheOtherSideReceives_AndKeepsOtherMessagesInOrder()
    {
        using var world = new World();
        using DmaBufHandle buffer = world.Exporter.Allocate(Size);
        world.Sender.SendBuffer(buffer);
        using var received = (ReceivedBuffer)world.Receiver.Receive()!;
        world.Receiver.Acknowledge(received, 1);

        Task<ChannelMessage?> answering = Task.Run(() => world.Receiver.Receive(TimeSpan.FromSeconds(30)), TestContext.Current.CancellationToken);
        world.Sender.Ping(TimeSpan.FromSeconds(30)); // the ack that arrives first is kept for Receive
        var ack = (BufferAcknowledged)world.Sender.Receive()!;

        Assert.Equal(1UL, ack.UserData);
        world.Sender.Dispose();
        Assert.Null(await answering);
    }

    [Fact]
    public void Goodbye_EndsTheStreamCleanly_AndDropsTheRegistrations()
    {
        var imports = new ImportCache(new MmapCache());
        using var world = new World(imports: imports);
        using DmaBufHandle buffer = world.Exporter.Allocate(Size);
        world.Sender.SendBuffer(buffer);
        var received = (ReceivedBuffer)world.Receiver.Receive()!;
        DmaBuffer imported = received.Handle.Buffer;

        world.Sender.Dispose();

        Assert.Null(world.Receiver.Receive());
        Assert.True(world.Receiver.IsClosed);
        Assert.Equal(ChannelErrorReason.None, world.Receiver.CloseReason);
        Assert.Equal(0, world.Receiver.RegisteredBuffers);
        Assert.Equal(DmaBufState.Live, imported.State); // the delivery still holds it
        received.Dispose(); // the release cannot be sent any more; that is fine
        Assert.Equal(DmaBufState.Released, imported.State);
        Assert.Equal(0, imports.Count);
        Assert.Equal(0, imports.Cache.Statistics.LiveMappings);
    }

    [Fact]
    public void Forget_DropsTheRegistration_SoTheNextSendCarriesTheFdAgain()
    {
        using var world = new World();
        using DmaBufHandle buffer = world.Exporter.Allocate(Size);
        world.Sender.SendBuffer(buffer);
        ((ReceivedBuffer)world.Receiver.Receive()!).Dispose();

        Assert.True(world.Sender.Forget(buffer.BufferId));
        world.Sender.SendBuffer(buffer);
        using var again = (ReceivedBuffer)world.Receiver.Receive()!; // the forget is handled on the way

        Assert.True(again.CarriedFd);
        Assert.Equal(1, world.Receiver.RegisteredBuffers);
        Assert.False(world.Sender.Forget(12345));
    }

    [Fact]
    public void TransientSend_AlwaysCarriesTheFd_AndRegistersNothing()
    {
        var imports = new ImportCache(new MmapCache());
        using var world = new World(imports: imports);
        using DmaBufHandle buffer = world.Exporter.Allocate(Size);
        var objects = new List<long>();

        for (int i = 0; i < 3; i++)
        {
            world.Sender.SendBuffer(buffer, transient: true);
            using var received = (ReceivedBuffer)world.Receiver.Receive()!;
            Assert.True(received.CarriedFd && received.IsTransient);
            using (CpuMapping map = received.Handle.MapCpu())
            {
                objects.Add(received.Handle.BufferId);
            }
        }

        Assert.Equal(3, objects.Distinct().Count()); // imported afresh every time
        Assert.Equal(3, imports.Cache.Statistics.MapCalls); // and mapped afresh: the "remap" baseline
        Assert.Equal(0, world.Receiver.RegisteredBuffers);
        Assert.Equal(0, world.Sender.SharedBuffers);
    }

    [Fact]
    public void SendBuffer_OfABufferWithoutADescriptor_IsRefused()
    {
        using var world = new World();
        using DmaBufHandle managed = DmaBuffer.Export(new DmaBufExportInfo { Exporter = new NoFdExporter(), Size = 4096, Registry = new BufferRegistry() });

        Assert.Throws<ArgumentException>(() => world.Sender.SendBuffer(managed));
        Assert.False(world.Sender.IsClosed);
    }

    [Fact]
    public void PeerOfAnotherUser_IsRejected_AndItsSocketClosed()
    {
        Leaks.AssertNone(() =>
        {
            (SafeFdHandle a, SafeFdHandle b) = Interop.Libc.SocketPair(Interop.Libc.SOCK_SEQPACKET);
            using (b)
            {
                ChannelProtocolException e = Assert.Throws<ChannelProtocolException>(() =>
                    BufferChannel.FromSocket(a, new BufferChannelOptions { AllowedUserId = Interop.Libc.geteuid() + 1 }));
                Assert.Equal(ChannelErrorReason.PeerCredentials, e.Reason);
                Assert.True(a.IsClosed);
            }
        });
    }

    [Fact]
    public void PeerThatIsNotTheExpectedProcess_IsRejected()
    {
        (SafeFdHandle a, SafeFdHandle b) = Interop.Libc.SocketPair(Interop.Libc.SOCK_SEQPACKET);
        using (b)
        {
            ChannelProtocolException e = Assert.Throws<ChannelProtocolException>(() =>
                BufferChannel.FromSocket(a, new BufferChannelOptions { ExpectedProcessId = Environment.ProcessId + 100000 }));
            Assert.Equal(ChannelErrorReason.PeerCredentials, e.Reason);
        }
    }

    [Fact]
    public void PeerCredentials_AreThoseOfTheOtherEnd()
    {
        using var world = new World();

        Assert.Equal(Environment.ProcessId, world.Receiver.Peer.ProcessId);
        Assert.Equal(Interop.Libc.geteuid(), world.Receiver.Peer.UserId);
    }

    [Fact]
    public async Task ListenAndConnect_OverAnAbstractName()
    {
        string name = ProcessResources.UniqueSocketName("listen");
        using BufferChannelListener listener = BufferChannelListener.Listen(name);
        using BufferChannel client = BufferChannel.Connect(name);
        using BufferChannel server = listener.Accept(TimeSpan.FromSeconds(30));

        Task<ChannelMessage?> answering = Task.Run(() => client.Receive(TimeSpan.FromSeconds(30)), TestContext.Current.CancellationToken);
        server.Ping(TimeSpan.FromSeconds(30));

        Assert.Equal(Environment.ProcessId, server.Peer.ProcessId);
        Assert.Equal(Interop.Libc.EADDRINUSE, Assert.Throws<LinuxErrorException>(() => BufferChannelListener.Listen(name)).Errno);
        client.Dispose(); // wakes the blocked receive, which ends cleanly
        Assert.Null(await answering);
        Assert.Null(server.Receive(TimeSpan.FromSeconds(30)));
    }

    [Fact]
    public void FullExchanges_LeakNoDescriptorsOrMappings()
    {
        var exporter = new MemfdExporter(new MmapCache());
        Leaks.AssertNone(() =>
        {
            using var pool = BufferPool.Allocate(exporter, 3, Size);
            var imports = new ImportCache(new MmapCache());
            (BufferChannel sender, BufferChannel receiver) = BufferChannel.CreatePair(
                new BufferChannelOptions { ReturnTo = pool }, new BufferChannelOptions { ImportCache = imports });
            using (sender)
            using (receiver)
            {
                for (int i = 0; i < 9; i++)
                {
                    Assert.True(pool.TryRent(out DmaBufHandle? frame));
                    sender.SendBuffer(frame);
                    using var received = (ReceivedBuffer)receiver.Receive()!;
                    using (CpuMapping map = received.Handle.MapCpu())
                    {
                        receiver.Acknowledge(received);
                    }

                    Assert.IsType<BufferAcknowledged>(sender.Receive());
                    received.Dispose();
                    Assert.True(((BufferReleased)sender.Receive()!).ReturnedToPool);
                }

                Assert.Equal(3, pool.Available);
                Assert.Equal(3, imports.Cache.Statistics.MapCalls); // one mmap per pool buffer, then hits
            }

            Assert.Equal(0, imports.Count);
            Assert.Equal(0, imports.Cache.Statistics.LiveMappings);
        });
    }

    /// <summary>A sender and a receiver in this process, each with its own caches.</summary>
    private sealed class World : IDisposable
    {
        public World(BufferPool? pool = null, ImportCache? imports = null)
        {
            Exporter = new MemfdExporter(new MmapCache());
            (Sender, Receiver) = BufferChannel.CreatePair(
                new BufferChannelOptions { ReturnTo = pool },
                new BufferChannelOptions { ImportCache = imports ?? new ImportCache(new MmapCache()) });
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

    private sealed class NoFdExporter : IDmaBufExporter
    {
        public string Name => "managed";

        public ScatterTable Map(DmaBufAttachment attachment, DmaDirection direction) => throw new NotSupportedException();

        public void Unmap(DmaBufAttachment attachment, ScatterTable table, DmaDirection direction)
        {
        }

        public void Release(DmaBuffer buffer)
        {
        }
    }
}

namespace DmaBuf.Linux.Tests;

/// <summary>
/// The consumer's hot path: an id-only delivery of a registered buffer reads the frame through the registration's one
/// mapping, leased per delivery from a pool. The mapping goes exactly once, when the registration ends and the last
/// delivery reading through it is disposed; a view kept past its delivery's Dispose cannot read the next delivery's frame.
/// </summary>
public sealed class RegisteredFrameTests
{
    private const long Size = 64 * 1024;
    private static readonly TimeSpan s_guard = Background<int>.Guard;

    public static TheoryData<ChannelTransport> Transports => [ChannelTransport.Socket, ChannelTransport.Ring];

    [Fact]
    public void TheMapping_GoesExactlyOnce_WhenForgotten_AfterTheLastLease()
    {
        var ledger = new ChannelLedger<Counted>(4, 1 << 20);
        var unmap = new Counted();
        var mapping = new FrameMapping(0x1000, 16, unmap);
        Assert.True(ledger.Register(5, 16, new Counted(), mapping));

        FrameLease a = ledger.LeaseRegistered(5, 16)!;
        FrameLease b = ledger.LeaseRegistered(5, 16)!;
        ledger.OnPeerForget(5, out FrameMapping? forgotten).Dispose();
        Assert.Same(mapping, forgotten);
        forgotten!.Retire();
        forgotten.Retire(); // idempotent
        Assert.Equal(0, unmap.Disposals); // two deliveries still read through it

        a.Dispose(a.Generation);
        a.Dispose(a.Generation - 1); // a stale generation does nothing
        Assert.Equal(0, unmap.Disposals);
        b.Dispose(b.Generation);
        Assert.Equal(1, unmap.Disposals);
        Assert.True(mapping.IsUnmapped);
    }

    /// <summary>
    /// A use's number never comes round again: past 2^31 uses of one lease (a few minutes of a tight in-process loop)
    /// the next number is still greater, and a view kept from an earlier use stays stale. With a 32-bit state word the
    /// number after 2^30 - 1 ... 2^31 - 1 wrapped to a negative or to 0, the road back to a number a kept view holds.
    /// </summary>
    [Theory]
    [InlineData((1L << 30) - 1)]
    [InlineData((1L << 31) - 1)]
    [InlineData((1L << 32) - 1)]
    public void AUseNumber_NeverComesRoundAgain_PastTheThirtyTwoBitRange(long first)
    {
        var mapping = new FrameMapping(0x1000, 16, new Counted());
        FrameLease other = mapping.Lease(); // a delivery's count, which the numbered lease's disposal below gives back
        var lease = new FrameLease(mapping, first);
        lease.Open();
        long kept = lease.Generation;
        Assert.Equal(first, kept);
        Assert.True(lease.IsLive(kept));

        lease.Dispose(kept);
        lease.Open(); // the pooled lease serves the next delivery
        Assert.True(lease.Generation > kept, $"the use after {kept} is numbered {lease.Generation}");
        Assert.False(lease.IsLive(kept));
        Assert.True(lease.IsLive(lease.Generation));
        Assert.False(lease.IsLive(unchecked((int)kept))); // a view that kept only 32 bits of the number is stale too
        Assert.False(mapping.IsUnmapped);
        other.Dispose(other.Generation);
    }

    [Fact]
    public void ALeaseDisposedTwice_GoesBackToThePoolOnce()
    {
        var ledger = new ChannelLedger<Counted>(4, 1 << 20);
        var unmap = new Counted();
        Assert.True(ledger.Register(5, 16, new Counted(), new FrameMapping(0x1000, 16, unmap)));
        FrameLease a = ledger.LeaseRegistered(5, 16)!;
        a.Dispose(a.Generation);
        a.Dispose(a.Generation); // not open any more: nothing, whatever the number

        FrameLease b = ledger.LeaseRegistered(5, 16)!;
        FrameLease c = ledger.LeaseRegistered(5, 16)!;
        Assert.NotSame(b, c); // one pooled lease never serves two deliveries at once
        ledger.OnPeerForget(5).Dispose();
        b.Dispose(b.Generation);
        Assert.Equal(0, unmap.Disposals);
        c.Dispose(c.Generation);
        Assert.Equal(1, unmap.Disposals);
    }

    [Fact]
    public void TheMapping_GoesExactlyOnce_WhenTheLedgerCloses()
    {
        var ledger = new ChannelLedger<Counted>(4, 1 << 20);
        var unmap = new Counted();
        Assert.True(ledger.Register(5, 16, new Counted(), new FrameMapping(0x1000, 16, unmap)));
        FrameLease lease = ledger.LeaseRegistered(5, 16)!;

        ChannelLedger<Counted>.CloseResult closed = ledger.Close(ChannelErrorReason.None)!;
        FrameMapping mapping = Assert.Single(closed.Mappings);
        mapping.Retire();
        Assert.Equal(0, unmap.Disposals);
        lease.Dispose(lease.Generation);
        lease.Dispose(lease.Generation);
        Assert.Equal(1, unmap.Disposals);
        Assert.Throws<ChannelProtocolException>(() => ledger.LeaseRegistered(5, 16));
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public void IdOnlyDeliveries_ReadTheFrame_AndAStaleFrameThrows(ChannelTransport transport)
    {
        using var world = new World(transport);
        using DmaBufHandle buffer = world.Exporter.Allocate(Size);
        using (CpuMapping w = buffer.MapCpu())
        {
            w.Span.Fill(0x5a);
        }

        world.Sender.SendBuffer(buffer);
        using (var first = (ReceivedBuffer)world.Receiver.Receive(s_guard)!)
        {
            Assert.True(first.CarriedFd);
            Assert.True(first.HasFrame);
            Assert.Equal(0x5a, first.Frame.Span[^1]);
        }

        world.Sender.SendBuffer(buffer);
        var second = (ReceivedBuffer)world.Receiver.Receive(s_guard)!;
        Assert.False(second.CarriedFd);
        ReceivedFrame stale = second.Frame;
        Assert.Equal(Size, stale.Length);
        Assert.Equal(0x5a, stale.Span[0]);
        second.Dispose();
        Assert.Throws<ObjectDisposedException>(() => stale.Span[0]);
        Assert.Throws<ObjectDisposedException>(() => second.Frame.Length);
        Assert.Throws<ObjectDisposedException>(() => stale.BeginCpuAccess(CpuAccess.Read));

        world.Sender.SendBuffer(buffer);
        using var third = (ReceivedBuffer)world.Receiver.Receive(s_guard)!; // reuses the pooled lease of the second
        third.Frame.BeginCpuAccess(CpuAccess.Read); // the bracket works through the frame, no handle made for it
        Assert.Equal(0x5a, third.Frame.Span[7]);
        third.Frame.EndCpuAccess(CpuAccess.Read);
        Assert.Throws<ObjectDisposedException>(() => stale.Span[0]); // still stale, though the lease now serves the third
        Assert.Equal(buffer.Buffer.GetLinuxBuffer().Identity, third.Handle.Buffer.GetLinuxBuffer().Identity); // made on demand
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public void AForgottenRegistration_StaysMappedForItsLastDelivery_ThenNothingIsHeld(ChannelTransport transport)
    {
        Leaks.AssertNone(() =>
        {
            using var world = new World(transport);
            using DmaBufHandle buffer = world.Exporter.Allocate(Size);
            world.Sender.SendBuffer(buffer);
            ((ReceivedBuffer)world.Receiver.Receive(s_guard)!).Dispose();
            world.Sender.SendBuffer(buffer);
            var kept = (ReceivedBuffer)world.Receiver.Receive(s_guard)!;

            Assert.True(world.Sender.Forget(buffer.BufferId));
            Assert.Throws<TimeoutException>(() => world.Receiver.Receive(TimeSpan.FromMilliseconds(50))); // handles the forget
            Assert.Equal(0, world.Receiver.RegisteredBuffers);
            kept.Frame.Span[0] = 1; // the forgotten registration's mapping is still there for the delivery
            kept.Dispose();
        });
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public void ClosingWithADeliveryOut_KeepsItsFrame_ThenNothingIsHeld(ChannelTransport transport)
    {
        Leaks.AssertNone(() =>
        {
            var world = new World(transport);
            using DmaBufHandle buffer = world.Exporter.Allocate(Size);
            world.Sender.SendBuffer(buffer);
            ((ReceivedBuffer)world.Receiver.Receive(s_guard)!).Dispose();
            world.Sender.SendBuffer(buffer);
            var kept = (ReceivedBuffer)world.Receiver.Receive(s_guard)!;
            world.Dispose();
            kept.Frame.Span[0] = 2;
            kept.Dispose();
        });
    }

    private sealed class Counted : IDisposable
    {
        public int Disposals { get; private set; }

        public void Dispose() => Disposals++;
    }

    private sealed class World : IDisposable
    {
        public World(ChannelTransport transport)
        {
            Exporter = new MemfdExporter(new MmapCache());
            (Sender, Receiver) = BufferChannel.CreatePair(
                new BufferChannelOptions { Transport = transport },
                new BufferChannelOptions { ImportCache = new ImportCache(new MmapCache()), Transport = transport });
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

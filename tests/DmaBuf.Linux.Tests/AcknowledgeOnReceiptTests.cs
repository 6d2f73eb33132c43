namespace DmaBuf.Linux.Tests;

/// <summary><see cref="BufferChannelOptions.AcknowledgeOnReceipt"/>: the channel acknowledges what it holds, on both transports.</summary>
public sealed class AcknowledgeOnReceiptTests
{
    private const long Size = 32 * 1024;
    private static readonly TimeSpan s_guard = Background<int>.Guard;

    public static TheoryData<ChannelTransport> Transports => [ChannelTransport.Socket, ChannelTransport.Ring];

    [Theory]
    [MemberData(nameof(Transports))]
    public void EveryDelivery_IsAcknowledgedBeforeTheApplicationDoesAnything(ChannelTransport transport)
    {
        using var pool = BufferPool.Allocate(new MemfdExporter(new MmapCache()), 1, Size);
        (BufferChannel sender, BufferChannel receiver) = Pair(transport, pool, acknowledge: true);
        using (sender)
        using (receiver)
        {
            for (int i = 0; i < 4; i++)
            {
                Assert.True(pool.TryRent(out DmaBufHandle? frame));
                using (CpuMapping map = frame.MapCpu())
                {
                    map.Span.Fill((byte)(i + 1));
                }

                long seq = sender.SendBuffer(frame, userData: (ulong)i);
                var received = (ReceivedBuffer)receiver.Receive(s_guard)!;

                // The sender learns the receiver holds the frame while the receiver has not acknowledged it itself.
                var ack = (BufferAcknowledged)sender.Receive(s_guard)!;
                Assert.Equal((frame.BufferId, seq, 0UL), (ack.BufferId, ack.Sequence, ack.UserData));
                Assert.Equal(1, sender.OutstandingDeliveries);
                Assert.True(received.HasFrame);
                Assert.Equal((byte)(i + 1), received.Frame.Span[^1]);

                received.Dispose();
                var released = (BufferReleased)sender.Receive(s_guard)!;
                Assert.Equal((seq, true), (released.Sequence, released.ReturnedToPool));
            }

            Assert.Equal(0, sender.OutstandingDeliveries);
        }
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task ReceiveAsync_AcknowledgesAsReceiveDoes(ChannelTransport transport)
    {
        var exporter = new MemfdExporter(new MmapCache());
        using DmaBufHandle buffer = exporter.Allocate(Size);
        (BufferChannel sender, BufferChannel receiver) = Pair(transport, pool: null, acknowledge: true);
        await using (sender)
        await using (receiver)
        {
            for (int i = 0; i < 3; i++)
            {
                long seq = sender.SendBuffer(buffer, userData: (ulong)i);
                using var cancel = new CancellationTokenSource(s_guard);
                var received = (ReceivedBuffer)(await receiver.ReceiveAsync(cancel.Token))!;
                var ack = (BufferAcknowledged)sender.Receive(s_guard)!;
                Assert.Equal(seq, ack.Sequence);
                received.Dispose();
                Assert.Equal(seq, ((BufferReleased)sender.Receive(s_guard)!).Sequence);
            }
        }
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public void OffByDefault_NothingIsAcknowledgedUntilTheApplicationSaysSo(ChannelTransport transport)
    {
        var exporter = new MemfdExporter(new MmapCache());
        using DmaBufHandle buffer = exporter.Allocate(Size);
        (BufferChannel sender, BufferChannel receiver) = Pair(transport, pool: null, acknowledge: false);
        using (sender)
        using (receiver)
        {
            long seq = sender.SendBuffer(buffer);
            using var received = (ReceivedBuffer)receiver.Receive(s_guard)!;
            Assert.Throws<TimeoutException>(() => sender.Receive(TimeSpan.FromMilliseconds(100)));
            receiver.Acknowledge(received, 9);
            var ack = (BufferAcknowledged)sender.Receive(s_guard)!;
            Assert.Equal((seq, 9UL), (ack.Sequence, ack.UserData));
            Assert.False(sender.IsClosed);
        }
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public void AnAcknowledgementOfTheApplicationToo_IsASecondOne_AndHarmless(ChannelTransport transport)
    {
        var exporter = new MemfdExporter(new MmapCache());
        using DmaBufHandle buffer = exporter.Allocate(Size);
        (BufferChannel sender, BufferChannel receiver) = Pair(transport, pool: null, acknowledge: true);
        using (sender)
        using (receiver)
        {
            long seq = sender.SendBuffer(buffer);
            using (var received = (ReceivedBuffer)receiver.Receive(s_guard)!)
            {
                receiver.Acknowledge(received, 5);
            }

            var first = (BufferAcknowledged)sender.Receive(s_guard)!;
            var second = (BufferAcknowledged)sender.Receive(s_guard)!;
            var released = (BufferReleased)sender.Receive(s_guard)!;
            Assert.Equal((seq, 0UL, seq, 5UL, seq), (first.Sequence, first.UserData, second.Sequence, second.UserData, released.Sequence));
            Assert.False(sender.IsClosed);
            Assert.False(receiver.IsClosed);
        }
    }

    private static (BufferChannel Sender, BufferChannel Receiver) Pair(ChannelTransport transport, BufferPool? pool, bool acknowledge) =>
        BufferChannel.CreatePair(
            new BufferChannelOptions { ReturnTo = pool, Transport = transport, Wait = RingWait.Hybrid },
            new BufferChannelOptions
            {
                ImportCache = new ImportCache(new MmapCache()),
                Transport = transport,
                Wait = RingWait.Hybrid,
                AcknowledgeOnReceipt = acknowledge,
            });
}

namespace DmaBuf.Linux.Tests;

/// <summary>
/// <see cref="BufferChannel.SendBufferAsync"/> against a peer that does not read: the send waits for room without
/// holding the caller's thread, a cancelled send sends nothing and leaves the channel usable, and once the peer reads
/// again sends go through.
/// </summary>
public sealed class ChannelAsyncSendTests
{
    private const long Size = 16 * 1024;
    private const int MaxSends = 200_000;
    private static readonly TimeSpan s_guard = Background<int>.Guard;

    public static TheoryData<ChannelTransport> Transports => [ChannelTransport.Socket, ChannelTransport.Ring];

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task ASendToAFullPeer_WaitsWithoutAThread_IsCancelledCleanly_AndSendsAgainOnceDrained(ChannelTransport transport)
    {
        var exporter = new MemfdExporter(new MmapCache());
        (BufferChannel sender, BufferChannel receiver) = BufferChannel.CreatePair(
            new BufferChannelOptions { Transport = transport, SendTimeout = TimeSpan.FromSeconds(60) },
            new BufferChannelOptions { Transport = transport, ImportCache = new ImportCache(new MmapCache()) });
        using (sender)
        using (receiver)
        using (DmaBufHandle buffer = exporter.Allocate(Size))
        using (var cts = new CancellationTokenSource())
        {
            // Fill the peer, which reads nothing meanwhile: every send completes at once until there is no room.
            int sent = 0;
            ValueTask<long> pending;
            while (true)
            {
                pending = sender.SendBufferAsync(buffer, userData: (ulong)sent, cancellationToken: cts.Token);
                if (!pending.IsCompleted)
                {
                    break;
                }

                await pending;
                sent++;
                Assert.True(sent < MaxSends, $"{sent} sends and the peer is still not full");
            }

            // The call returned to this thread with the send still waiting: no thread is blocked in it.
            Task<long> waiting = pending.AsTask();
            await Task.Delay(200, TestContext.Current.CancellationToken);
            Assert.False(waiting.IsCompleted, "the send to a full peer completed");

            await cts.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting);
            Assert.False(sender.IsClosed);

            // Drain: exactly the sends that completed arrive, in order; the cancelled one sent nothing.
            for (int i = 0; i < sent; i++)
            {
                using (var received = (ReceivedBuffer)receiver.Receive(s_guard)!)
                {
                    Assert.Equal((ulong)i, received.UserData);
                }

                Assert.IsType<BufferReleased>(sender.Receive(s_guard)); // so the peer's releases never fill our side
            }

            Assert.Throws<TimeoutException>(() => receiver.Receive(TimeSpan.FromMilliseconds(100)));

            long sequence = await sender.SendBufferAsync(buffer, userData: 999, cancellationToken: TestContext.Current.CancellationToken);
            using var again = (ReceivedBuffer)receiver.Receive(s_guard)!;
            Assert.Equal((999UL, sequence), (again.UserData, again.Sequence));
            Assert.Equal(1, sender.Statistics.FdsSent);
        }
    }

    [Fact]
    public async Task AnAsyncSendWaitingForRoomInTheRing_IsSignalledWhenTheReceiverConsumes()
    {
        var exporter = new MemfdExporter(new MmapCache());
        (BufferChannel sender, BufferChannel receiver) = BufferChannel.CreatePair(
            new BufferChannelOptions { Transport = ChannelTransport.Ring, SendTimeout = TimeSpan.FromSeconds(60) },
            new BufferChannelOptions { Transport = ChannelTransport.Ring, ImportCache = new ImportCache(new MmapCache()) });
        using (sender)
        using (receiver)
        using (DmaBufHandle buffer = exporter.Allocate(Size))
        {
            int sent = 0;
            ValueTask<long> pending;
            while ((pending = sender.SendBufferAsync(buffer, userData: (ulong)sent, cancellationToken: TestContext.Current.CancellationToken)).IsCompleted)
            {
                await pending;
                sent++;
            }

            Assert.Equal(ChannelRing.Capacity, sent); // the ring is full: the next send waits for room
            Task<long> waiting = pending.AsTask();
            await Task.Delay(20, TestContext.Current.CancellationToken);
            Assert.Equal(0, receiver.WakeUpsSent);

            using (var first = (ReceivedBuffer)receiver.Receive(s_guard)!)
            {
                Assert.Equal(0UL, first.UserData);
                await waiting.WaitAsync(s_guard, TestContext.Current.CancellationToken);
                Assert.True(receiver.WakeUpsSent >= 1, "the receiver never signalled the send waiting for room");
            }
        }
    }
}

namespace DmaBuf.Linux.Tests;

/// <summary>
/// A blocking ring receive sleeps on a futex on its sleeping word (ring version 4): the word says so (2, not the
/// socket poll's 1), a publication wakes it with <c>FUTEX_WAKE</c>, and a record that goes over the socket instead
/// (a ping, its pong) is followed by a futex wake, since a futex sleep does not see the socket. A disposal on another
/// thread wakes its own sleeping receive.
/// </summary>
public sealed unsafe class RingFutexTests
{
    private const long Size = 4096;

    private static readonly TimeSpan s_guard = Background<int>.Guard;

    [Fact]
    public void ABlockingReceive_SaysItSleepsOnItsFutex_AndAPublicationWakesIt()
    {
        (BufferChannel sender, BufferChannel receiver) = Pair();
        using (sender)
        using (receiver)
        {
            using DmaBufHandle buffer = new MemfdExporter(new MmapCache()).Allocate(Size);
            var receiving = Background<ChannelMessage?>.Start(() => receiver.Receive(s_guard));
            WaitUntilAsleepOnItsFutex(sender);

            sender.SendBuffer(buffer);

            using var received = Assert.IsType<ReceivedBuffer>(receiving.Result);
            Assert.Equal(1, sender.WakeUpsSent);
            Assert.Equal(ChannelRing.Awake, SleepingWord(sender)); // awake again, and says so
        }
    }

    /// <summary>
    /// Without the nudge after the socket record, the ping waited out the sleeper's 50 ms futex slice, unwoken. (Its
    /// pong is nudged the same way; whether the pinger is asleep by the time it comes is the scheduler's to say.)
    /// </summary>
    [Fact]
    public void APingToAPeerAsleepOnItsFutex_IsFollowedByAFutexWake()
    {
        (BufferChannel pinger, BufferChannel sleeper) = Pair();
        using (pinger)
        using (sleeper)
        {
            var sleeping = Background<ChannelMessage?>.Start(() => sleeper.Receive(s_guard));
            WaitUntilAsleepOnItsFutex(pinger);

            pinger.Ping(s_guard);

            Assert.Equal(1, pinger.WakeUpsSent); // the ping went over the socket, and the sleeper's futex was woken
            Assert.False(sleeping.IsCompleted); // the ping and pong are the channel's own; the receive waits on
            sleeper.Dispose();
            Assert.Null(sleeping.Result);
        }
    }

    /// <summary>
    /// A futex keeps no pending wake: a consumer that has set its flag and looked at the ring one last time, but is not
    /// yet in <c>FUTEX_WAIT</c>, would sleep through a publication made in between (its wake found nobody). The
    /// producer therefore clears the flag before it wakes, and the consumer's wait, expecting the flag, returns at once.
    /// Without the clear, the wait below sleeps its whole 5 s and says it slept.
    /// </summary>
    [Fact]
    public void APublicationBetweenTheConsumersLastLookAndItsWait_ClearsTheFlag_SoTheWaitDoesNotSleep()
    {
        (BufferChannel sender, BufferChannel receiver) = Pair();
        using (sender)
        using (receiver)
        {
            using DmaBufHandle buffer = new MemfdExporter(new MmapCache()).Allocate(Size);
            int* word = (int*)(sender.Ring!.OutboundAddress + ChannelRing.SleepingOffset);
            Volatile.Write(ref *word, ChannelRing.SleepingOnFutex); // the consumer's flag, set; its last look found nothing

            sender.SendBuffer(buffer); // the publication, before the consumer's FUTEX_WAIT

            Assert.Equal(ChannelRing.Awake, Volatile.Read(ref *word));
            Assert.Equal(FutexOutcome.Changed, Interop.Libc.FutexWait(word, ChannelRing.SleepingOnFutex, 5000)); // not slept through: not TimedOut
            using var received = Assert.IsType<ReceivedBuffer>(receiver.Receive(s_guard));
        }
    }

    [Fact]
    public void ADisposeOnAnotherThread_WakesItsOwnReceiveAsleepOnTheFutex()
    {
        (BufferChannel sender, BufferChannel receiver) = Pair();
        using (sender)
        {
            var receiving = Background<ChannelMessage?>.Start(() => receiver.Receive(s_guard));
            WaitUntilAsleepOnItsFutex(sender);

            receiver.Dispose();

            Assert.Null(receiving.Result);
            Assert.Equal(ChannelErrorReason.None, receiver.CloseReason);
        }
    }

    private static (BufferChannel, BufferChannel) Pair() => BufferChannel.CreatePair(
        new BufferChannelOptions { Transport = ChannelTransport.Ring, Wait = RingWait.Block },
        new BufferChannelOptions { ImportCache = new ImportCache(new MmapCache()), Transport = ChannelTransport.Ring, Wait = RingWait.Block });

    /// <summary>The peer's sleeping word, as it lies in <paramref name="producer"/>'s outbound region.</summary>
    private static int SleepingWord(BufferChannel producer) =>
        Volatile.Read(ref *(int*)(producer.Ring!.OutboundAddress + ChannelRing.SleepingOffset));

    private static void WaitUntilAsleepOnItsFutex(BufferChannel producer)
    {
        long until = Environment.TickCount64 + (long)s_guard.TotalMilliseconds;
        while (SleepingWord(producer) != ChannelRing.SleepingOnFutex)
        {
            Assert.True(Environment.TickCount64 < until, $"the receiver never said it slept on its futex (the word reads {SleepingWord(producer)})");
            Thread.Sleep(1);
        }
    }
}

namespace DmaBuf.Linux.Tests;

/// <summary>The control ring on its own, between two threads: what one side publishes, the other reads whole.</summary>
public sealed class ChannelRingTests
{
    /// <summary>
    /// The consumer polls the very slot the producer is writing (it waits there for the next entry), for many laps of
    /// the ring. Every entry must arrive as it was published, and no poll may see a stamp other than the slot's empty one
    /// or its published one: a stamp written on the way (a whole-struct store that zeroes or copies the slot's stamp
    /// first) reads as a corrupt ring and closes a sound connection.
    /// </summary>
    [Fact]
    public void AConsumerPollingTheSlotBeingWritten_SeesEachEntryWholeAndNoStampOnTheWay()
    {
        const int entries = 300_000; // over a thousand laps of the ring
        (ChannelRing producer, ChannelRing consumer) = ChannelRing.CreateConnectedPair();
        using (producer)
        using (consumer)
        {
            Assert.True(producer.Enter());
            Assert.True(consumer.Enter());
            try
            {
                Exception? failure = null;
                var reader = new Thread(() =>
                {
                    try
                    {
                        for (long k = 0; k < entries; k++)
                        {
                            RingEntry e;
                            while (!consumer.TryRead(out e))
                            {
                            }

                            if (e.Type != 1 + (uint)(k % 3) || e.BufferId != k || e.Sequence != k + 1 || e.Size != 4096 || e.UserData != (ulong)k * 31)
                            {
                                throw new InvalidOperationException($"Entry {k} arrived as type {e.Type}, id {e.BufferId}, sequence {e.Sequence}, size {e.Size}, user data {e.UserData}.");
                            }
                        }
                    }
                    catch (Exception e)
                    {
                        failure = e;
                    }
                }) { IsBackground = true };
                reader.Start();
                for (long k = 0; k < entries && failure is null; k++)
                {
                    while (!producer.HasRoom())
                    {
                        if (failure is not null)
                        {
                            break;
                        }
                    }

                    producer.Publish(new RingEntry { Type = 1 + (uint)(k % 3), BufferId = k, Sequence = k + 1, Size = 4096, UserData = (ulong)k * 31 });
                }

                Assert.True(reader.Join(Background<int>.Guard), "The consumer did not read every entry in time.");
                Assert.Null(failure);
            }
            finally
            {
                producer.Exit();
                consumer.Exit();
            }
        }
    }
}

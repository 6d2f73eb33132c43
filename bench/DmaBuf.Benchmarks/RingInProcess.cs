using System.Diagnostics;
using DmaBuf.Cli;
using DmaBuf.Linux;

namespace DmaBuf.Benchmarks;

/// <summary>
/// The ring handoff's software cost, apart from what two processes and a 12 MB frame add: in one process, a pair of
/// ring channels (<see cref="BufferChannel.CreatePair"/>) between the main thread and a spinning consumer thread, and a
/// bare ping-pong on one cache line each way between the same two threads, in one run. Back-to-back handoffs of a
/// small registered buffer, then handoffs of a frame filled and checked between them (the work <c>dmabuf share</c>
/// does), each timed from the send until the acknowledgement, as there. Both again on the bare control ring, with no
/// channel around it (<see cref="ChannelRing.CreateConnectedPair"/>: an entry out, a one-line id check, an
/// acknowledgement back): what the ring's own lines cost in each rhythm, so the rest is the channel's software.
/// </summary>
internal static class RingInProcess
{
    public static int Run(ReadOnlySpan<string> args)
    {
        int count = args.Length > 0 && int.TryParse(args[0], out int n) && n > 0 ? n : 20_000;
        long frameBytes = 3840L * 2160 * 3 / 2;
        double[] floor = PingPong(count, 4096, fill: false);
        double[] floorFilled = PingPong(Math.Min(count, 600), frameBytes, fill: true);
        double[] hot = Handoffs(count, 4096, fill: false);
        double[] filled = Handoffs(Math.Min(count, 600), frameBytes, fill: true);
        double[] bareHot = BareRing(count, 4096, fill: false);
        double[] bareFilled = BareRing(Math.Min(count, 600), frameBytes, fill: true);
        Console.WriteLine($"ring-inprocess: one process, two threads, spin; {count} round trips / handoffs, 600 of 4K frames");
        Console.WriteLine($"{"way",-52} {"p50 µs",8} {"p99 µs",9} {"p50 ÷ floor",12}");
        double f50 = Pct(floor, 0.5);
        (string, double[])[] rows =
        [
            ("bare ping-pong (the floor)", floor),
            ("bare ping-pong, 4K frame filled and checked", floorFilled),
            ("ring handoff, 4 KiB, back to back", hot),
            ("ring handoff, 4K frame filled and checked", filled),
            ("bare ring, no channel: 4 KiB, back to back", bareHot),
            ("bare ring, no channel: 4K frame filled and checked", bareFilled),
        ];
        foreach ((string name, double[] t) in rows)
        {
            Console.WriteLine($"{name,-52} {Pct(t, 0.5),8:0.000} {Pct(t, 0.99),9:0.000} {Pct(t, 0.5) / f50,12:0.0}");
        }

        return 0;
    }

    /// <summary>
    /// The bare ping-pong through one shared page (a memfd, as the ring's regions are), with the loops of
    /// <c>dmabuf share</c>'s floor (<see cref="SharedMemoryFloor"/>) on two threads instead of two processes: the
    /// producer writes a number (and, when <paramref name="fill"/>, the checksum of the frame it filled just before, on
    /// the same line), the consumer copies the number to a line of its own, then checks the frame and says so on a
    /// third line, which the producer waits for before its next frame: the floor in the handoff's rhythm.
    /// </summary>
    private static double[] PingPong(int count, long frameBytes, bool fill)
    {
        var exporter = new MemfdExporter(new MmapCache());
        using DmaBufHandle buffer = exporter.Allocate(SharedMemoryFloor.PageBytes + frameBytes, "ping-pong");
        using CpuMapping map = buffer.MapCpu();
        SharedMemoryFloor.Words(map.Span).Clear();
        var pong = new Thread(() => SharedMemoryFloor.AnswerPings(SharedMemoryFloor.Words(map.Span), map.Span[(int)SharedMemoryFloor.PageBytes..]))
        {
            IsBackground = true,
        };
        pong.Start();
        Span<long> words = SharedMemoryFloor.Words(map.Span);
        Span<byte> frame = map.Span[(int)SharedMemoryFloor.PageBytes..];
        int warmup = fill ? 100 : 10_000;
        long deadline = Environment.TickCount64 + 60_000;
        double[] times = new double[count];
        int bad = 0;
        for (int k = 1; k <= warmup + count; k++)
        {
            double t = fill ? SharedMemoryFloor.RoundTripWithFrame(words, frame, k, k) : SharedMemoryFloor.RoundTrip(words, k, work: 0);
            if (k > warmup)
            {
                times[k - warmup - 1] = t;
            }

            if (fill && !SharedMemoryFloor.FrameChecked(words, k, deadline))
            {
                bad++;
            }
        }

        SharedMemoryFloor.StopAnswering(words);
        pong.Join();
        if (bad != 0)
        {
            throw new InvalidOperationException($"{bad} frames failed their check in the ping-pong's consumer.");
        }

        return times;
    }

    private static double[] Handoffs(int count, long size, bool fill)
    {
        var exporter = new MemfdExporter(new MmapCache());
        using var pool = BufferPool.Allocate(exporter, 4, size);
        (BufferChannel tx, BufferChannel rx) = BufferChannel.CreatePair(
            new BufferChannelOptions { Transport = ChannelTransport.Ring, Wait = RingWait.Spin, ReturnTo = pool },
            new BufferChannelOptions
            {
                Transport = ChannelTransport.Ring, Wait = RingWait.Spin, ImportCache = new ImportCache(new MmapCache()),
                AcknowledgeOnReceipt = true, // as dmabuf share's consumer: the acknowledgement goes from the receive path
            });
        using (tx)
        using (rx)
        {
            int bad = 0;
            var consumer = new Thread(() =>
            {
                while (rx.Receive() is { } m)
                {
                    if (m is ReceivedBuffer r)
                    {
                        using (r)
                        {
                            ReceivedFrame frame = r.Frame;
                            if (ShareFramePattern.Checksum(frame.Span) != r.UserData)
                            {
                                bad++;
                            }
                        }
                    }
                }
            }) { IsBackground = true };
            consumer.Start();
            TimeSpan patience = TimeSpan.FromSeconds(30);
            int warmup = fill ? 100 : 10_000;
            var times = new List<double>(count);
            for (int k = 0; k < warmup + count; k++)
            {
                DmaBufHandle frame = Cli.Handoffs.Rent(tx, pool, patience);
                ulong sum = fill || k < 4 ? Cli.Handoffs.Fill(frame, k) : Checksum(frame);
                while (tx.OutstandingDeliveries > 0)
                {
                    Cli.Handoffs.Next(tx, patience);
                }

                long t0 = Stopwatch.GetTimestamp();
                long sequence = tx.SendBuffer(frame, sum);
                while (Cli.Handoffs.Next(tx, patience) is not BufferAcknowledged ack || ack.Sequence != sequence)
                {
                }

                if (k >= warmup)
                {
                    times.Add(Cli.Handoffs.MicrosecondsSince(t0));
                }
            }

            while (tx.OutstandingDeliveries > 0)
            {
                Cli.Handoffs.Next(tx, patience);
            }

            tx.Dispose();
            consumer.Join();
            if (bad != 0)
            {
                throw new InvalidOperationException($"{bad} frames failed their check in the consumer.");
            }

            return [.. times];
        }
    }

    /// <summary>
    /// The handoff loop on two bare rings: the producer fills the frame, publishes an entry with its id and checksum and
    /// is timed until the acknowledgement; the consumer checks the id against a table, publishes the acknowledgement,
    /// checks the frame and publishes a release, which the producer waits for before the next frame.
    /// </summary>
    private static double[] BareRing(int count, long size, bool fill)
    {
        const uint Buffer = 1, Ack = 2, Release = 3, Stop = 4;
        const long Id = 3;
        (ChannelRing producer, ChannelRing consumer) = ChannelRing.CreateConnectedPair();
        var exporter = new MemfdExporter(new MmapCache());
        using DmaBufHandle buffer = exporter.Allocate(size, "bare-ring");
        using CpuMapping map = buffer.MapCpu();
        using (producer)
        using (consumer)
        {
            if (!producer.Enter() || !consumer.Enter())
            {
                throw new InvalidOperationException("The bare rings closed at once.");
            }

            int bad = 0;
            var thread = new Thread(() =>
            {
                bool[] known = new bool[16];
                known[Id] = true;
                while (true)
                {
                    RingEntry e = Take(consumer);
                    if (e.Type == Stop)
                    {
                        return;
                    }

                    if (e.Type != Buffer || (ulong)e.BufferId >= (ulong)known.Length || !known[e.BufferId])
                    {
                        throw new InvalidOperationException($"The bare ring carried entry type {e.Type}, id {e.BufferId}.");
                    }

                    Put(consumer, new RingEntry { Type = Ack, BufferId = e.BufferId, Sequence = e.Sequence });
                    if (ShareFramePattern.Checksum(map.Span) != e.UserData)
                    {
                        bad++;
                    }

                    Put(consumer, new RingEntry { Type = Release, BufferId = e.BufferId, Sequence = e.Sequence });
                }
            }) { IsBackground = true };
            thread.Start();
            int warmup = fill ? 100 : 10_000;
            var times = new List<double>(count);
            ulong sum = 0;
            for (int k = 0; k < warmup + count; k++)
            {
                sum = fill || k == 0 ? ShareFramePattern.Fill(map.Span, k) : sum;
                long t0 = Stopwatch.GetTimestamp();
                Put(producer, new RingEntry { Type = Buffer, BufferId = Id, Sequence = k + 1, Size = size, UserData = sum });
                if (Take(producer).Type != Ack)
                {
                    throw new InvalidOperationException("The bare ring's consumer did not acknowledge.");
                }

                if (k >= warmup)
                {
                    times.Add(Cli.Handoffs.MicrosecondsSince(t0));
                }

                if (Take(producer).Type != Release)
                {
                    throw new InvalidOperationException("The bare ring's consumer did not release.");
                }
            }

            Put(producer, new RingEntry { Type = Stop });
            thread.Join();
            producer.Exit();
            consumer.Exit();
            if (bad != 0)
            {
                throw new InvalidOperationException($"{bad} frames failed their check in the bare ring's consumer.");
            }

            return [.. times];
        }
    }

    private static void Put(ChannelRing ring, RingEntry entry)
    {
        while (!ring.HasRoom())
        {
            Thread.SpinWait(1);
        }

        ring.Publish(entry);
    }

    private static RingEntry Take(ChannelRing ring)
    {
        RingEntry entry;
        while (!ring.TryRead(out entry))
        {
            Thread.SpinWait(1);
        }

        return entry;
    }

    private static ulong Checksum(DmaBufHandle frame)
    {
        using CpuMapping map = frame.MapCpu();
        return ShareFramePattern.Checksum(map.Span);
    }

    private static double Pct(double[] values, double q) => Cli.Handoffs.Percentile(values, q);
}

using System.Diagnostics;
using DmaBuf.Cli;
using DmaBuf.Linux;

namespace DmaBuf.Benchmarks;

/// <summary>
/// The ring handoff's software cost, apart from what two processes and a 12 MB frame add: in one process, a pair of
/// ring channels (<see cref="BufferChannel.CreatePair"/>) between the main thread and a spinning consumer thread, and a
/// bare ping-pong on one cache line each way between the same two threads, in one run. Three loops: back-to-back
/// handoffs of a small registered buffer, then handoffs of a frame filled and checked between them (the work
/// <c>dmabuf share</c> does), each timed from the send until the acknowledgement, as there.
/// </summary>
internal static class RingInProcess
{
    public static int Run(ReadOnlySpan<string> args)
    {
        int count = args.Length > 0 && int.TryParse(args[0], out int n) && n > 0 ? n : 20_000;
        long frameBytes = 3840L * 2160 * 3 / 2;
        double[] floor = PingPong(count);
        double[] hot = Handoffs(count, 4096, fill: false);
        double[] filled = Handoffs(Math.Min(count, 600), frameBytes, fill: true);
        Console.WriteLine($"ring-inprocess: one process, two threads, spin; {count} round trips / handoffs, 600 of 4K frames");
        Console.WriteLine($"{"way",-44} {"p50 µs",8} {"p99 µs",9} {"p50 ÷ floor",12}");
        double f50 = Pct(floor, 0.5);
        foreach ((string name, double[] t) in new[] { ("bare ping-pong (the floor)", floor), ("ring handoff, 4 KiB, back to back", hot), ("ring handoff, 4K frame filled and checked", filled) })
        {
            Console.WriteLine($"{name,-44} {Pct(t, 0.5),8:0.000} {Pct(t, 0.99),9:0.000} {Pct(t, 0.5) / f50,12:0.0}");
        }

        return 0;
    }

    private static double[] PingPong(int count)
    {
        long[] words = new long[64];
        var pong = new Thread(() =>
        {
            long last = 0;
            while (true)
            {
                long v = Volatile.Read(ref words[0]);
                if (v == -1)
                {
                    return;
                }

                if (v != last)
                {
                    last = v;
                    Volatile.Write(ref words[16], v);
                }
                else
                {
                    Thread.SpinWait(1);
                }
            }
        }) { IsBackground = true };
        pong.Start();
        int warmup = 10_000;
        double[] times = new double[count];
        for (int k = 1; k <= warmup + count; k++)
        {
            long t0 = Stopwatch.GetTimestamp();
            Volatile.Write(ref words[0], k);
            while (Volatile.Read(ref words[16]) != k)
            {
                Thread.SpinWait(1);
            }

            if (k > warmup)
            {
                times[k - warmup - 1] = Cli.Handoffs.MicrosecondsSince(t0);
            }
        }

        Volatile.Write(ref words[0], -1);
        pong.Join();
        return times;
    }

    private static double[] Handoffs(int count, long size, bool fill)
    {
        var exporter = new MemfdExporter(new MmapCache());
        using var pool = BufferPool.Allocate(exporter, 4, size);
        (BufferChannel tx, BufferChannel rx) = BufferChannel.CreatePair(
            new BufferChannelOptions { Transport = ChannelTransport.Ring, Wait = RingWait.Spin, ReturnTo = pool },
            new BufferChannelOptions { Transport = ChannelTransport.Ring, Wait = RingWait.Spin, ImportCache = new ImportCache(new MmapCache()) });
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
                            rx.Acknowledge(r);
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

    private static ulong Checksum(DmaBufHandle frame)
    {
        using CpuMapping map = frame.MapCpu();
        return ShareFramePattern.Checksum(map.Span);
    }

    private static double Pct(double[] values, double q) => Cli.Handoffs.Percentile(values, q);
}

using System.Diagnostics;
using System.Runtime.InteropServices;
using DmaBuf.Linux;

namespace DmaBuf.Cli;

/// <summary>
/// The floor of any shared-memory handoff between the two processes: a bare ping-pong through one shared page, both
/// sides busy-polling (the producer writes a number on one cache line, the consumer copies it to another). The page is
/// a memfd the producer hands over on the channel once, marked by <see cref="Marker"/>.
/// </summary>
internal static class SharedMemoryFloor
{
    /// <summary>User data that marks the floor's page (a frame's checksum is never asked to equal it and be 4 KiB).</summary>
    public const ulong Marker = 0xf100_f100_f100_f100;

    public const long PageBytes = 4096;
    private const int Ping = 0;       // the producer's line (longs)
    private const int Pong = 16;      // the consumer's line: 128 bytes further
    private const long Stop = -1;

    /// <summary>Producer side: hands the page over, times <paramref name="count"/> round trips, stops the consumer.</summary>
    public static double[] Measure(BufferChannel channel, int count, TimeSpan patience)
    {
        using DmaBufHandle page = new MemfdExporter(new MmapCache()).Allocate(PageBytes, "shm-floor");
        using CpuMapping map = page.MapCpu();
        Span<long> words = MemoryMarshal.Cast<byte, long>(map.Span);
        words.Clear();
        long sequence = channel.SendBuffer(page, Marker);
        while (channel.Receive(patience) is not BufferAcknowledged ack || ack.Sequence != sequence)
        {
        }

        int warmup = Math.Min(1000, count);
        double[] times = new double[count];
        for (int k = 1; k <= warmup + count; k++)
        {
            long t0 = Stopwatch.GetTimestamp();
            Volatile.Write(ref words[Ping], k);
            while (Volatile.Read(ref words[Pong]) != k)
            {
                Thread.SpinWait(1);
            }

            if (k > warmup)
            {
                times[k - warmup - 1] = Handoffs.MicrosecondsSince(t0);
            }
        }

        Volatile.Write(ref words[Ping], Stop);
        while (channel.Receive(patience) is not BufferReleased released || released.Sequence != sequence)
        {
        }

        return times;
    }

    /// <summary>Whether <paramref name="received"/> is the floor's page.</summary>
    public static bool IsFloorPage(ReceivedBuffer received) =>
        received.UserData == Marker && received.Handle.Buffer.Size == PageBytes;

    /// <summary>Consumer side: answers every ping until the producer says stop, then releases the page.</summary>
    public static void Answer(BufferChannel channel, ReceivedBuffer received)
    {
        using (received)
        {
            using CpuMapping map = received.Handle.MapCpu();
            channel.Acknowledge(received);
            Span<long> words = MemoryMarshal.Cast<byte, long>(map.Span);
            long last = 0;
            while (true)
            {
                long v = Volatile.Read(ref words[Ping]);
                if (v == Stop)
                {
                    return;
                }

                if (v != last)
                {
                    last = v;
                    Volatile.Write(ref words[Pong], v);
                }
                else
                {
                    Thread.SpinWait(1);
                }
            }
        }
    }
}

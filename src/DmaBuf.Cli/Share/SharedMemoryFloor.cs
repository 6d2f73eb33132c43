using System.Diagnostics;
using System.Runtime.InteropServices;
using DmaBuf.Linux;

namespace DmaBuf.Cli;

/// <summary>The two floors of a shared-memory handoff: back to back, and in the handoff's rhythm.</summary>
/// <param name="Idle">Round trips back to back: every line hot in both CPUs' caches.</param>
/// <param name="InRhythm">
/// One round trip per frame, as a handoff comes: the producer writes a whole frame before each ping, the consumer
/// reads and checks it after each pong, and the next ping waits until it has.
/// </param>
internal sealed record SharedMemoryTimes(double[] Idle, double[] InRhythm);

/// <summary>
/// The floor of any shared-memory handoff between the two processes: a bare ping-pong through one shared page, both
/// sides busy-polling (the producer writes a number on one cache line, the consumer copies it to another). The buffer
/// is a memfd the producer hands over on the channel once, marked by <see cref="Marker"/>: its first page holds the
/// words, the rest one frame, which the in-rhythm round trips write and read between pings as a handoff's frames are.
/// </summary>
internal static class SharedMemoryFloor
{
    /// <summary>User data that marks the floor's buffer (a frame's checksum is never asked to equal it and be this size).</summary>
    public const ulong Marker = 0xf100_f100_f100_f100;

    public const long PageBytes = 4096;
    private const int Ping = 0;       // the producer's line (longs)
    private const int Pong = 16;      // the consumer's line: 128 bytes further
    private const int Work = 1;       // the producer's, on the ping's line: the checksum of the frame to read after the pong, 0 for none
    private const int Done = 48;      // the consumer's: the last round trip whose frame it read (negated: it was wrong)
    private const long Stop = -1;

    /// <summary>
    /// Producer side: hands the buffer over, times <paramref name="idle"/> round trips back to back and
    /// <paramref name="inRhythm"/> with a frame of <paramref name="frameBytes"/> between, and stops the consumer.
    /// </summary>
    public static SharedMemoryTimes Measure(BufferChannel channel, int idle, int inRhythm, long frameBytes, TimeSpan patience)
    {
        using DmaBufHandle buffer = new MemfdExporter(new MmapCache()).Allocate(PageBytes + frameBytes, "shm-floor");
        using CpuMapping map = buffer.MapCpu();
        Span<long> words = Words(map.Span);
        Span<byte> frame = map.Span[(int)PageBytes..];
        words.Clear();
        long sequence = channel.SendBuffer(buffer, Marker);
        while (channel.Receive(patience) is not BufferAcknowledged ack || ack.Sequence != sequence)
        {
        }

        int warmup = Math.Min(1000, idle);
        double[] idleTimes = new double[idle];
        long k = 0;
        for (int i = 0; i < warmup + idle; i++)
        {
            double t = RoundTrip(words, ++k, work: 0);
            if (i >= warmup)
            {
                idleTimes[i - warmup] = t;
            }
        }

        double[] rhythmTimes = new double[inRhythm];
        long deadline = Environment.TickCount64 + (long)patience.TotalMilliseconds;
        for (int i = 0; i < inRhythm; i++)
        {
            rhythmTimes[i] = RoundTripWithFrame(words, frame, ++k, i);
            if (!FrameChecked(words, k, deadline))
            {
                throw new InvalidOperationException($"The consumer read the floor's frame {i} with a wrong checksum.");
            }
        }

        StopAnswering(words);
        while (channel.Receive(patience) is not BufferReleased released || released.Sequence != sequence)
        {
        }

        return new SharedMemoryTimes(idleTimes, rhythmTimes);
    }

    /// <summary>The page's words: the first <see cref="PageBytes"/> of a floor buffer's mapping.</summary>
    public static Span<long> Words(Span<byte> buffer) => MemoryMarshal.Cast<byte, long>(buffer[..(int)PageBytes]);

    /// <summary>
    /// Producer side, in rhythm: fills <paramref name="frame"/> with frame <paramref name="number"/>'s pattern
    /// (untimed), then times round trip <paramref name="k"/> asking the consumer to check the frame after its pong.
    /// </summary>
    public static double RoundTripWithFrame(Span<long> words, Span<byte> frame, long k, long number)
    {
        ulong checksum = ShareFramePattern.Fill(frame, number);
        return RoundTrip(words, k, (long)(checksum | 1)); // never 0: 0 says "no frame"
    }

    /// <summary>
    /// Producer side: waits until the consumer has checked round trip <paramref name="k"/>'s frame (until
    /// <paramref name="deadline"/>, an <see cref="Environment.TickCount64"/>) and says whether it was right.
    /// </summary>
    /// <exception cref="TimeoutException">The consumer did not check it in time.</exception>
    public static bool FrameChecked(Span<long> words, long k, long deadline)
    {
        long done;
        while (Math.Abs(done = Volatile.Read(ref words[Done])) != k)
        {
            if (Environment.TickCount64 > deadline)
            {
                throw new TimeoutException("The consumer did not read the floor's frame in time.");
            }

            Thread.SpinWait(1);
        }

        return done > 0;
    }

    /// <summary>Producer side: tells the consumer's <see cref="AnswerPings"/> to return.</summary>
    public static void StopAnswering(Span<long> words) => Volatile.Write(ref words[Ping], Stop);

    /// <summary>Producer side: one timed round trip <paramref name="k"/>, carrying <paramref name="work"/> (0: no frame to check).</summary>
    public static double RoundTrip(Span<long> words, long k, long work)
    {
        long t0 = Stopwatch.GetTimestamp();
        Volatile.Write(ref words[Work], work); // inside the timed part, as a handoff's entry carries its checksum
        Volatile.Write(ref words[Ping], k);
        while (Volatile.Read(ref words[Pong]) != k)
        {
            Thread.SpinWait(1);
        }

        return Handoffs.MicrosecondsSince(t0);
    }

    /// <summary>Whether <paramref name="received"/> is the floor's buffer.</summary>
    public static bool IsFloorBuffer(ReceivedBuffer received) =>
        received.UserData == Marker && received.Handle.Buffer.Size > PageBytes;

    /// <summary>
    /// Consumer side: answers every ping until the producer says stop (reading and checking the frame after the pong
    /// when the producer asks for it), then releases the buffer.
    /// </summary>
    public static void Answer(BufferChannel channel, ReceivedBuffer received)
    {
        using (received)
        {
            using CpuMapping map = received.Handle.MapCpu();
            channel.Acknowledge(received);
            AnswerPings(Words(map.Span), map.Span[(int)PageBytes..]);
        }
    }

    /// <summary>
    /// Consumer side: answers every ping with its pong, then, when the ping carried a checksum, checks
    /// <paramref name="frame"/> against it and says so; returns when the producer says stop.
    /// </summary>
    public static void AnswerPings(Span<long> words, ReadOnlySpan<byte> frame)
    {
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
                long work = Volatile.Read(ref words[Work]); // written before this ping, on its line
                Volatile.Write(ref words[Pong], v);
                if (work != 0)
                {
                    bool ok = (long)(ShareFramePattern.Checksum(frame) | 1) == work;
                    Volatile.Write(ref words[Done], ok ? v : -v);
                }
            }
            else
            {
                Thread.SpinWait(1);
            }
        }
    }
}

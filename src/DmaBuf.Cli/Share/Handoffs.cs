using System.Diagnostics;
using DmaBuf.Linux;

namespace DmaBuf.Cli;

/// <summary>Handoff times of one phase: the steady ones, and the first send of each pool buffer (its descriptor) apart.</summary>
/// <param name="Steady">Sends that carried only the buffer's id (every send, when transient: each carries its descriptor).</param>
/// <param name="FirstSends">The first send of each pool buffer on this channel (registered sends only).</param>
internal sealed record HandoffTimes(double[] Steady, double[] FirstSends);

/// <summary>
/// The handoff measurement, on either transport: fill a frame, wait until the consumer has released everything, then
/// time the send until the consumer's acknowledgement (it acknowledges as soon as it holds the frame mapped).
/// </summary>
internal static class Handoffs
{
    /// <summary>Hands <paramref name="count"/> frames over. Registered sends pass each descriptor once; transient ones every time.</summary>
    public static HandoffTimes Measure(BufferChannel channel, BufferPool pool, int count, long firstFrame, bool transient, TimeSpan patience)
    {
        var steady = new List<double>(count);
        var first = new List<double>();
        var sent = new HashSet<long>();
        for (int k = 0; k < count; k++)
        {
#pragma warning disable CA2000 // borrowed from the pool, which owns and disposes it
            DmaBufHandle frame = Rent(channel, pool, patience);
#pragma warning restore CA2000
            ulong checksum = Fill(frame, firstFrame + k);
            while (channel.OutstandingDeliveries > 0)
            {
                Next(channel, patience);
            }

            bool firstSend = !transient && sent.Add(frame.BufferId);
            long t0 = Stopwatch.GetTimestamp();
            long sequence = channel.SendBuffer(frame, checksum, transient);
            while (Next(channel, patience) is not BufferAcknowledged ack || ack.Sequence != sequence)
            {
            }

            (firstSend ? first : steady).Add(Handoffs.MicrosecondsSince(t0));
        }

        while (channel.OutstandingDeliveries > 0)
        {
            Next(channel, patience);
        }

        return new HandoffTimes([.. steady], [.. first]);
    }

    /// <summary>A frame from the pool, receiving (releases return frames) until one is free.</summary>
    public static DmaBufHandle Rent(BufferChannel channel, BufferPool pool, TimeSpan patience)
    {
        DmaBufHandle? frame;
        while (!pool.TryRent(out frame))
        {
            Next(channel, patience);
        }

        return frame;
    }

    public static ChannelMessage Next(BufferChannel channel, TimeSpan patience) =>
        channel.Receive(patience) ?? throw new InvalidOperationException("The consumer ended the connection early.");

    /// <summary>Writes frame <paramref name="number"/>'s content into the buffer in place and returns its checksum.</summary>
    public static ulong Fill(DmaBufHandle frame, long number)
    {
        using CpuMapping map = frame.MapCpu();
        frame.BeginCpuAccess(CpuAccess.Write);
        ulong checksum = ShareFramePattern.Fill(map.Span, number);
        frame.EndCpuAccess(CpuAccess.Write);
        return checksum;
    }

    /// <summary>
    /// Microseconds since <paramref name="start"/> (a <see cref="Stopwatch.GetTimestamp"/>), at the timer's resolution:
    /// not through a <see cref="TimeSpan"/>, whose 100 ns ticks would round a 150 ns round trip down to 0.1 µs.
    /// </summary>
    public static double MicrosecondsSince(long start) => (Stopwatch.GetTimestamp() - start) * 1e6 / Stopwatch.Frequency;

    /// <summary>Nearest-rank percentile; NaN of nothing.</summary>
    public static double Percentile(double[] values, double q)
    {
        if (values.Length == 0)
        {
            return double.NaN;
        }

        double[] sorted = [.. values.Order()];
        int rank = Math.Clamp((int)Math.Ceiling(q * sorted.Length) - 1, 0, sorted.Length - 1);
        return sorted[rank];
    }
}

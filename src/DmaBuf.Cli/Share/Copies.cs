using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;
using DmaBuf.Linux;

namespace DmaBuf.Cli;

/// <summary>
/// The copy baseline: each frame's bytes written through a Unix stream socket; timed from the first byte sent until the
/// consumer says it holds the whole frame (then it verifies it and says so again, before the next frame).
/// </summary>
internal static class Copies
{
    /// <summary>Copies <paramref name="count"/> frames of <paramref name="pool"/> to the consumer; the time of each, in µs.</summary>
    public static double[] Measure(Socket copy, BufferPool pool, int count, long firstFrame)
    {
        double[] times = new double[count];
        byte[] header = new byte[16];
        byte[] reply = new byte[16];
        for (int k = 0; k < count; k++)
        {
#pragma warning disable CA2000 // borrowed from the pool, which owns and disposes it
            if (!pool.TryRent(out DmaBufHandle? frame))
#pragma warning restore CA2000
            {
                throw new InvalidOperationException("The pool is empty after the consumer released every frame.");
            }

            ulong checksum = Handoffs.Fill(frame, firstFrame + k);
            using (CpuMapping map = frame.MapCpu())
            {
                BinaryPrimitives.WriteInt64LittleEndian(header, map.Length);
                BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(8), checksum);
                long t0 = Stopwatch.GetTimestamp();
                SendAll(copy, header);
                SendAll(copy, map.Span);
                ReceiveExactly(copy, reply); // the consumer has the whole frame
                times[k] = Handoffs.MicrosecondsSince(t0);
                ReceiveExactly(copy, reply); // and has verified it
            }

            pool.Return(frame.BufferId);
        }

        return times;
    }

    public static void SendAll(Socket socket, ReadOnlySpan<byte> data)
    {
        while (!data.IsEmpty)
        {
            data = data[socket.Send(data)..];
        }
    }

    public static bool ReceiveExactly(Socket socket, Span<byte> data, bool endOk = false)
    {
        int done = 0;
        while (done < data.Length)
        {
            int n = socket.Receive(data[done..]);
            if (n == 0)
            {
                return done == 0 && endOk ? false : throw new IOException("The copy connection ended in the middle of a frame.");
            }

            done += n;
        }

        return true;
    }
}

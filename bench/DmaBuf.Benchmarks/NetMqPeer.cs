using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using DmaBuf.Cli;
using NetMQ;
using NetMQ.Sockets;

namespace DmaBuf.Benchmarks;

/// <summary>
/// The NetMQ way of <see cref="PeersComparison"/>: a pair socket over <c>ipc://</c> to a second process (this program,
/// started with <c>peers-netmq-child ADDRESS FRAME-SIZE</c>). Each frame is a two-part message (its checksum, its bytes);
/// the consumer answers "held" once it has the whole frame (the time stops there), then "verified" or "wrong" after
/// checking it, before the next frame, as the CLI's copy consumer does.
/// </summary>
internal static class NetMqPeer
{
    private const byte Held = 1;
    private const byte Verified = 2;

    /// <summary>Producer side: times <paramref name="count"/> frames of <paramref name="frameSize"/> bytes.</summary>
    public static double[] Measure(int count, long frameSize, TimeSpan patience)
    {
        string address = $"ipc://dmabuf-peers-{Environment.ProcessId}-{Guid.NewGuid():N}";
        using var pair = new PairSocket();
        pair.Bind(address);
        using Process child = StartChild(address, frameSize);
        try
        {
            byte[] frame = new byte[frameSize]; // NetMQ sends from managed arrays: the frame is filled in one, untimed
            byte[] header = new byte[8];
            double[] times = new double[count];
            for (int k = 0; k < count; k++)
            {
                BinaryPrimitives.WriteUInt64LittleEndian(header, ShareFramePattern.Fill(frame, k));
                long t0 = Stopwatch.GetTimestamp();
                pair.SendMoreFrame(header).SendFrame(frame);
                Expect(pair, Held, patience);
                times[k] = Handoffs.MicrosecondsSince(t0);
                Expect(pair, Verified, patience);
            }

            pair.SendFrameEmpty(); // the end
            if (!child.WaitForExit(patience) || child.ExitCode != 0)
            {
                throw new InvalidOperationException($"The NetMQ consumer failed: {child.StandardError.ReadToEnd().Trim()}");
            }

            return times;
        }
        finally
        {
            if (!child.HasExited)
            {
                child.Kill();
            }
        }
    }

    /// <summary>Consumer side (the second process): holds, verifies and answers every frame until the empty message.</summary>
    public static int RunChild(ReadOnlySpan<string> args)
    {
        if (args.Length != 2 || !long.TryParse(args[1], NumberStyles.None, CultureInfo.InvariantCulture, out long frameSize))
        {
            Console.Error.WriteLine("peers-netmq-child: usage: peers-netmq-child ADDRESS FRAME-SIZE");
            return 2;
        }

        using var pair = new PairSocket();
        pair.Connect(args[0]);
        while (true)
        {
            byte[] header = pair.ReceiveFrameBytes(out bool more);
            if (!more)
            {
                return 0; // the end
            }

            byte[] frame = pair.ReceiveFrameBytes();
            pair.SendFrame([Held]);
            bool ok = frame.Length == frameSize && ShareFramePattern.Checksum(frame) == BinaryPrimitives.ReadUInt64LittleEndian(header);
            pair.SendFrame([ok ? Verified : (byte)0]);
        }
    }

    private static void Expect(PairSocket pair, byte what, TimeSpan patience)
    {
        if (!pair.TryReceiveFrameBytes(patience, out byte[]? reply))
        {
            throw new TimeoutException($"The NetMQ consumer did not answer within {patience}.");
        }

        if (reply.Length != 1 || reply[0] != what)
        {
            throw new InvalidOperationException("The NetMQ consumer found a frame with the wrong content.");
        }
    }

    /// <summary>This program again, as the consumer: its apphost, or its assembly under the same dotnet host.</summary>
    private static Process StartChild(string address, long frameSize)
    {
        var info = new ProcessStartInfo { RedirectStandardError = true, UseShellExecute = false };
        string self = Environment.ProcessPath ?? "dotnet";
        info.FileName = self;
        if (Path.GetFileName(self) == "dotnet")
        {
            info.ArgumentList.Add(typeof(NetMqPeer).Assembly.Location);
        }

        info.ArgumentList.Add("peers-netmq-child");
        info.ArgumentList.Add(address);
        info.ArgumentList.Add(frameSize.ToString(CultureInfo.InvariantCulture));
        return Process.Start(info) ?? throw new InvalidOperationException($"Could not start the NetMQ consumer ({info.FileName}).");
    }
}

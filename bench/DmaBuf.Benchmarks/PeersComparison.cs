using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text.Json;
using DmaBuf.Cli;
using DmaBuf.Linux;

namespace DmaBuf.Benchmarks;

/// <summary>
/// <c>-- peers [--frames N] [--wait spin|block|hybrid]</c>: the same 4K NV12 frames (what <c>dmabuf share --resolution
/// 4k</c> moves) handed from this process to a second one four ways, in one run: NetMQ over <c>ipc://</c> and a Unix
/// stream socket (both carry the bytes), our socket handoff and our ring handoff (both pass the descriptor once, then
/// the id). One table: p50 and p99 per frame and each p50 as a multiple of the ring handoff's.
/// </summary>
/// <remarks>
/// Every frame is timed from the producer's send until the consumer says it holds the frame (copied in, or mapped), with
/// the consumer idle before each (it verified and released the previous frame). The second process for the two copies
/// and our two handoffs is <c>dmabuf share consumer</c>, driven by the CLI's own measurement units (Handoffs, Copies,
/// RingHandoff); NetMQ's is this program (<see cref="NetMqPeer"/>), since only the benchmarks reference NetMQ.
/// </remarks>
internal static class PeersComparison
{
    private const int Width = 3840;
    private const int Height = 2160;
    private const int PoolSize = 3;
    private static readonly TimeSpan s_patience = TimeSpan.FromSeconds(120);

    public static int Run(ReadOnlySpan<string> args)
    {
        int frames = 300;
        RingWait wait = RingWait.Hybrid;
        for (int i = 0; i < args.Length; i++)
        {
            string value = i + 1 < args.Length ? args[i + 1] : "";
            switch (args[i])
            {
                case "--frames" when int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out frames) && frames > 0:
                    i++;
                    break;
                case "--wait" when Enum.TryParse(value, ignoreCase: true, out wait) && Enum.IsDefined(wait):
                    i++;
                    break;
                default:
                    Console.Error.WriteLine($"peers: bad argument '{args[i]}' (usage: peers [--frames N>0] [--wait spin|block|hybrid]).");
                    return 2;
            }
        }

        long frameSize = (long)Width * Height * 3 / 2;
        try
        {
            Console.WriteLine($"peers: {frames} frames of {Width}x{Height} NV12 ({frameSize:N0} bytes) per way, pool of {PoolSize}, ring wait {wait.ToString().ToLowerInvariant()}");
            var rows = new List<(string Name, double[] Times)>();
            rows.Add(("NetMQ ipc:// (copy)", NetMqPeer.Measure(frames, frameSize, s_patience)));
            (double[] stream, double[] socket, double[] ring, string consumer) = MeasureOurs(frames, frameSize, wait);
            rows.Add(("Unix stream socket (copy)", stream));
            rows.Add(("dma-buf handoff, socket", socket));
            rows.Add(($"dma-buf handoff, ring ({wait.ToString().ToLowerInvariant()})", ring));
            Print(rows, ring);
            Console.WriteLine(consumer);
            return 0;
        }
        catch (Exception e) when (e is InvalidOperationException or TimeoutException or IOException or SocketException or LinuxErrorException or ChannelProtocolException or NetMQ.NetMQException)
        {
            Console.Error.WriteLine($"peers: {e.Message}");
            return 1;
        }
    }

    /// <summary>The Unix stream copy and our two handoffs, against one <c>dmabuf share consumer</c>.</summary>
    private static (double[] Stream, double[] Socket, double[] Ring, string Consumer) MeasureOurs(int frames, long frameSize, RingWait wait)
    {
        string name = $"dmabuf-peers-{Environment.ProcessId}-{Guid.NewGuid():N}";
        var exporter = new MemfdExporter(new MmapCache());
        using BufferPool pool = BufferPool.Allocate(exporter, PoolSize, frameSize, "frame");
        using BufferChannelListener listener = BufferChannelListener.Listen(name, new BufferChannelOptions { ReturnTo = pool });
        using var copyListener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        copyListener.Bind(new UnixDomainSocketEndPoint("\0" + name + "-copy"));
        copyListener.Listen(1);
        using Process consumer = ShareConsumer.Start(name, frameSize, PoolSize, wait);
        Task<string> output = consumer.StandardOutput.ReadToEndAsync();
        Task<string> errors = consumer.StandardError.ReadToEndAsync();
        double[] stream, socket, ring;
        try
        {
            using (BufferChannel channel = listener.Accept(s_patience))
            {
                if (channel.Peer.ProcessId != consumer.Id)
                {
                    throw new InvalidOperationException($"Process {channel.Peer.ProcessId} connected instead of the consumer {consumer.Id}.");
                }

                if (!copyListener.Poll(s_patience, SelectMode.SelectRead))
                {
                    throw new TimeoutException("The consumer did not open its copy connection.");
                }

                using Socket copy = copyListener.Accept();
                socket = Handoffs.Measure(channel, pool, frames, firstFrame: 0, transient: false, s_patience).Steady;
                stream = Copies.Measure(copy, pool, frames, firstFrame: frames);
                ring = RingHandoff.Measure(name, pool, consumer.Id, wait, frames, firstFrame: 2L * frames, s_patience).Handoff.Steady;
                copy.Shutdown(SocketShutdown.Both);
            }
        }
        catch
        {
            if (!consumer.HasExited)
            {
                consumer.Kill();
            }

            throw;
        }

        if (!consumer.WaitForExit(s_patience))
        {
            consumer.Kill();
            throw new TimeoutException("The consumer did not finish.");
        }

        string line = output.Result.Split('\n').FirstOrDefault(l => l.StartsWith("RESULT ", StringComparison.Ordinal))
            ?? throw new InvalidOperationException($"The consumer failed (exit {consumer.ExitCode}): {errors.Result.Trim()}");
        ConsumerResult r = JsonSerializer.Deserialize(line["RESULT ".Length..], ConsumerJsonContext.Default.ConsumerResult)
            ?? throw new InvalidOperationException("The consumer's result was empty.");
        if (r.Failed != 0 || consumer.ExitCode != 0)
        {
            throw new InvalidOperationException($"The consumer found {r.Failed} frames with the wrong content (exit {consumer.ExitCode}).");
        }

        return (stream, socket, ring,
            $"consumer: verified {r.Verified} socket, {r.RingVerified} ring, {r.CopyVerified} stream frames; {r.LeakedFds} descriptors left open");
    }

    private static void Print(List<(string Name, double[] Times)> rows, double[] baseline)
    {
        double ringP50 = Handoffs.Percentile(baseline, 0.50);
        CultureInfo c = CultureInfo.InvariantCulture;
        Console.WriteLine();
        Console.WriteLine($"{"way",-34} {"p50 µs",10} {"p99 µs",10} {"p50 ÷ ring p50",15}");
        foreach ((string name, double[] times) in rows)
        {
            double p50 = Handoffs.Percentile(times, 0.50);
            double p99 = Handoffs.Percentile(times, 0.99);
            Console.WriteLine($"{name,-34} {p50.ToString("0.0", c),10} {p99.ToString("0.0", c),10} {(p50 / ringP50).ToString("0.0", c),15}");
        }

        Console.WriteLine();
    }
}

// The peer side of the cross-process tests. It prints one line per event on stdout for the test to read:
//   READY                         connected
//   RECV <id> <seq> <dev> <ino> <fd 0|1> <object id> <checksum> <kind>
//                                 received, mapped and acknowledged a buffer (kind: Memfd or DmaBuf)
//   SENT <dev> <ino> <object id>  (send mode) the buffer it sends, once
//   RELEASED <id> <seq>           (send mode) the test released a delivery
//   END                           the connection ended cleanly
// Modes:
//   receive <socket> [--hold]                 receive buffers; release each (or hold them all with --hold) until goodbye
//   send <socket> <count> <size> [--connections N] [--no-goodbye] [--exporter memfd|vgem]
//                                             send one buffer (a memfd, or a vgem dma-buf named peer-frame) <count>
//                                             times on each of N connections (the first send with its descriptor),
//                                             waiting for each release; with --no-goodbye exit at the end without
//                                             closing (as if it died)
using System.Globalization;
using DmaBuf;
using DmaBuf.Linux;
using DmaBuf.Linux.TestPeer;

CultureInfo c = CultureInfo.InvariantCulture;
Console.Out.Flush();
try
{
    return args[0] switch
    {
        "receive" => Receive(args[1], args.Contains("--hold")),
        "send" => Send(args[1], int.Parse(args[2], c), long.Parse(args[3], c), Option(args, "--connections", 1), args.Contains("--no-goodbye"),
            Text(args, "--exporter", "memfd")),
        _ => Usage(),
    };
}
catch (Exception e)
{
    Console.Error.WriteLine($"peer failed: {e}");
    return 2;
}

static int Usage()
{
    Console.Error.WriteLine("usage: receive <socket> [--hold] | send <socket> <count> <size> [--connections N] [--no-goodbye] [--exporter memfd|vgem]");
    return 64;
}

static int Option(string[] args, string name, int fallback)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 ? int.Parse(args[i + 1], CultureInfo.InvariantCulture) : fallback;
}

static string Text(string[] args, string name, string fallback)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 ? args[i + 1] : fallback;
}

static void Say(string line)
{
    Console.Out.WriteLine(line);
    Console.Out.Flush();
}

static int Receive(string socket, bool hold)
{
    var imports = new ImportCache(new MmapCache(256L << 20));
    using BufferChannel channel = BufferChannel.Connect(socket, new BufferChannelOptions { ImportCache = imports });
    Say("READY");
    var held = new List<ReceivedBuffer>();
    while (channel.Receive() is { } message)
    {
        if (message is not ReceivedBuffer received)
        {
            continue;
        }

        FileIdentity id = received.Handle.Buffer.GetLinuxBuffer().Identity;
        ulong sum;
        using (CpuMapping map = received.Handle.MapCpu())
        {
            received.Handle.BeginCpuAccess(CpuAccess.Read);
            sum = Pattern.Checksum(map.Span);
            received.Handle.EndCpuAccess(CpuAccess.Read);
        }

        channel.Acknowledge(received, sum);
        Say(string.Create(CultureInfo.InvariantCulture,
            $"RECV {received.RemoteBufferId} {received.Sequence} {id.Device} {id.Inode} {(received.CarriedFd ? 1 : 0)} {received.Handle.BufferId} {sum} {received.Handle.Buffer.GetLinuxBuffer().Kind}"));
        if (hold)
        {
            held.Add(received);
        }
        else
        {
            received.Dispose();
        }
    }

    held.ForEach(r => r.Dispose());
    Say("END");
    return 0;
}

static int Send(string socket, int count, long size, int connections, bool noGoodbye, string exporterName)
{
    var cache = new MmapCache(256L << 20);
    LinuxExporter exporter = exporterName switch
    {
        "memfd" => new MemfdExporter(cache),
        "vgem" => new DrmPrimeExporter("vgem", cache),
        _ => throw new ArgumentException($"unknown exporter '{exporterName}' (memfd or vgem)"),
    };
    using IDisposable? card = exporter as IDisposable; // the vgem exporter holds the card open
    using DmaBufHandle buffer = exporter.Allocate(size, "peer-frame");
    using (CpuMapping map = buffer.MapCpu())
    {
        buffer.BeginCpuAccess(CpuAccess.Write);
        Pattern.Fill(map.Span, 42);
        buffer.EndCpuAccess(CpuAccess.Write);
    }

    FileIdentity id = buffer.Buffer.GetLinuxBuffer().Identity;
    Say(string.Create(CultureInfo.InvariantCulture, $"SENT {id.Device} {id.Inode} {buffer.BufferId}"));
    var channels = new List<BufferChannel>();
    for (int i = 0; i < connections; i++)
    {
        channels.Add(BufferChannel.Connect(socket));
    }

    Say("READY");
    foreach (BufferChannel channel in channels)
    {
        for (int n = 0; n < count; n++)
        {
            long seq = channel.SendBuffer(buffer, userData: (ulong)n);
            while (true)
            {
                ChannelMessage? m = channel.Receive() ?? throw new InvalidOperationException("the test ended the connection early");
                if (m is BufferReleased r && r.Sequence == seq)
                {
                    Say(string.Create(CultureInfo.InvariantCulture, $"RELEASED {r.BufferId} {r.Sequence}"));
                    break;
                }
            }
        }
    }

    if (noGoodbye)
    {
        Environment.Exit(0); // no Dispose: the connections end as if the process died
    }

    channels.ForEach(ch => ch.Dispose());
    Say("END");
    return 0;
}

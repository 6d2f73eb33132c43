// The peer side of the cross-process tests. It prints one line per event on stdout for the test to read:
//   READY                         connected
//   RECV <id> <seq> <dev> <ino> <fd 0|1> <object id> <checksum> <kind>
//                                 received, mapped and acknowledged a buffer (kind: Memfd or DmaBuf)
//   SENT <dev> <ino> <object id>  (send mode) the buffer it sends, once
//   RELEASED <id> <seq>           (send mode) the test released a delivery
//   FRAME <seq> <n> <dev> <ino> <fd 0|1> ok|bad <why>
//                                 (frames mode) received frame <n> (the sender's user data), mapped it, checked it
//                                 against vivid's colour bars inside DMA_BUF_IOCTL_SYNC read brackets, and acknowledges
//                                 and releases it after this line
//   FDS <before> <after> <leaked> [<fd -> target>;...]
//                                 (frames mode) its descriptors once the first frame was done (a warm-up: the runtime
//                                 opens some the first time it needs them) and after the channel ended (runtime
//                                 libraries left out), and those held after that were not held before
//   DMABUFS <descriptors> <mappings>
//                                 (frames mode) dma-buf descriptors and mappings it still has once the channel ended
//   IMPORTS <count>               (frames mode) buffers its import cache still holds once the channel ended
//   WAITING <seq>                 (fenced mode) frame <seq> came with a sync_file; the peer now waits for it
//   FENCED <seq> <ms> <byte> <same 0|1> <fds>
//                                 (fenced mode) waited <ms> for the sync_file that came with frame <seq>, then read it:
//                                 its first byte (hex), whether every byte equals it, and how many descriptors the
//                                 frame carried (the buffer's and the fence's)
//   FENCE-TIMEOUT <seq> <ms> <fence>
//                                 (fenced mode) the frame's fence did not signal within <ms>; the frame was not read
//   FENCE-MISSING <seq>           (fenced mode) the frame came without a fence
//   END                           the connection ended cleanly
// Modes:
//   receive <socket> [--hold]                 receive buffers; release each (or hold them all with --hold) until goodbye
//   send <socket> <count> <size> [--connections N] [--no-goodbye] [--exporter memfd|vgem]
//                                             send one buffer (a memfd, or a vgem dma-buf named peer-frame) <count>
//                                             times on each of N connections (the first send with its descriptor),
//                                             waiting for each release; with --no-goodbye exit at the end without
//                                             closing (as if it died)
//   fenced <socket> <timeout ms>              receive frames that carry a sync_file until goodbye; wait up to
//                                             <timeout ms> for each one's fence before reading it (then FDS, END)
//   frames <socket> <width> <height> <bytes per line> <size image>
//                                             receive YUYV frames of that format until goodbye, checking each one
using System.Globalization;
using DmaBuf;
using DmaBuf.Linux;
using DmaBuf.Linux.V4l2;
using DmaBuf.Linux.TestPeer;

CultureInfo c = CultureInfo.InvariantCulture;
Console.Out.Flush();
try
{
    return args[0] switch
    {
        "receive" => Receive(args[1], args.Contains("--hold")),
        "frames" => Frames(args[1], new V4l2PixFormat(int.Parse(args[2], c), int.Parse(args[3], c), V4l2FourCC.Yuyv)
        {
            BytesPerLine = int.Parse(args[4], c),
            SizeImage = int.Parse(args[5], c),
        }),
        "fenced" => Fenced(args[1], TimeSpan.FromMilliseconds(int.Parse(args[2], c))),
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
    Console.Error.WriteLine("usage: receive <socket> [--hold] | send <socket> <count> <size> [--connections N] [--no-goodbye] [--exporter memfd|vgem]"
        + " | frames <socket> <width> <height> <bytes per line> <size image>"
        + " | fenced <socket> <timeout ms>");
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

static int Frames(string socket, V4l2PixFormat format) => ConsumeAll(
    socket,
    (channel, received) =>
    {
        LinuxBuffer linux = received.Handle.Buffer.GetLinuxBuffer();
        string verdict;
        using (CpuMapping map = received.Handle.MapCpu())
        {
            received.Handle.BeginCpuAccess(CpuAccess.Read);
            try
            {
                VividColorBars.AssertFrame(map.Span, format, $"frame {received.UserData}");
                verdict = "ok";
            }
            catch (InvalidDataException e)
            {
                verdict = $"bad {e.Message}";
            }
            finally
            {
                received.Handle.EndCpuAccess(CpuAccess.Read);
            }
        }

        Say(string.Create(CultureInfo.InvariantCulture,
            $"FRAME {received.Sequence} {received.UserData} {linux.Identity.Device} {linux.Identity.Inode} {(received.CarriedFd ? 1 : 0)} {(linux.Kind == LinuxBufferKind.DmaBuf ? verdict : $"bad imported as {linux.Kind}")}"));
        channel.Acknowledge(received);
    },
    (after, imports) =>
    {
        int dmaBufFds = after.Count(f => f.Contains("dmabuf", StringComparison.Ordinal));
        int dmaBufMaps = File.ReadLines("/proc/self/maps").Count(l => l.Contains("/dmabuf:", StringComparison.Ordinal));
        Say(string.Create(CultureInfo.InvariantCulture, $"DMABUFS {dmaBufFds} {dmaBufMaps}"));
        Say(string.Create(CultureInfo.InvariantCulture, $"IMPORTS {imports.Count}"));
    });

static int Fenced(string socket, TimeSpan timeout) => ConsumeAll(
    socket,
    (_, received) =>
    {
        string seq = received.Sequence.ToString(CultureInfo.InvariantCulture);
        if (received.Fence is not { } fence)
        {
            Say($"FENCE-MISSING {seq}");
            return;
        }

        var clock = System.Diagnostics.Stopwatch.StartNew();
        Say($"WAITING {seq}");
        if (!received.WaitForFence(timeout))
        {
            Say(string.Create(CultureInfo.InvariantCulture, $"FENCE-TIMEOUT {seq} {(long)timeout.TotalMilliseconds} {fence}"));
            return;
        }

        long waited = clock.ElapsedMilliseconds;
        using CpuMapping map = received.Handle.MapCpu();
        received.Handle.BeginCpuAccess(CpuAccess.Read, TimeSpan.Zero); // the buffer's own fences are done too: no wait here
        byte first = map.Span[0];
        bool same = !map.Span.ContainsAnyExcept(first);
        received.Handle.EndCpuAccess(CpuAccess.Read);
        Say(string.Create(CultureInfo.InvariantCulture,
            $"FENCED {seq} {waited} {first:x2} {(same ? 1 : 0)} {(received.CarriedFd ? 2 : 1)}"));
    });

// Connects, says READY, hands each delivery to onBuffer (disposing it after), until the peer ends the channel; then
// reports the descriptors opened since the first delivery (FDS), anything else the caller adds, and END.
static int ConsumeAll(string socket, Action<BufferChannel, ReceivedBuffer> onBuffer, Action<HashSet<string>, ImportCache>? report = null)
{
    HashSet<string>? before = null;
    var imports = new ImportCache(new MmapCache(256L << 20));
    using (BufferChannel channel = BufferChannel.Connect(socket, new BufferChannelOptions { ImportCache = imports }))
    {
        Say("READY");
        while (channel.Receive() is { } message)
        {
            if (message is not ReceivedBuffer received)
            {
                continue;
            }

            using (received)
            {
                onBuffer(channel, received);
            }

            before ??= Descriptors(); // after the first delivery, as the test's own leak checks warm up first
        }
    }

    GC.Collect();
    GC.WaitForPendingFinalizers();
    HashSet<string> after = Descriptors();
    before ??= after;
    string[] leaked = [.. after.Where(f => !before.Contains(f)).Order(StringComparer.Ordinal)];
    Say(string.Create(CultureInfo.InvariantCulture, $"FDS {before.Count} {after.Count} {leaked.Length} {string.Join(';', leaked)}").TrimEnd());
    report?.Invoke(after, imports);
    Say("END");
    return 0;
}

// This process's open descriptors as "fd -> target", less the runtime's libraries (opened as it first needs them)
// and the descriptor of the listing itself.
static HashSet<string> Descriptors()
{
    var fds = new HashSet<string>(StringComparer.Ordinal);
    foreach (string path in Directory.GetFileSystemEntries("/proc/self/fd"))
    {
        string? target = new FileInfo(path).LinkTarget;
        if (target is null || target.EndsWith("/fd", StringComparison.Ordinal)
            || target.EndsWith(".dll", StringComparison.Ordinal) || target.Contains(".so", StringComparison.Ordinal))
        {
            continue;
        }

        fds.Add($"{Path.GetFileName(path)} -> {target}");
    }

    return fds;
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

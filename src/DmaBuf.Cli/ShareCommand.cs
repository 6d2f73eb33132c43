using System.Buffers.Binary;
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text.Json;
using DmaBuf.Linux;
using Spectre.Console;

namespace DmaBuf.Cli;

/// <summary>
/// <c>dmabuf share</c>: a producer fills a pool of frames and hands them to a consumer in a second process with no copy
/// (the descriptor once, then the buffer's id; the consumer's mapping is cached), and measures that handoff against, in
/// the same run, a bare 16-byte round trip on the same socket, the frame copied through a Unix stream socket, and the
/// frame's descriptor passed and mmapped afresh every time.
/// </summary>
/// <remarks>
/// Every measured handoff starts with the consumer idle (the previous frame verified and released) and ends when the
/// consumer's acknowledgement arrives; the consumer acknowledges as soon as it holds the frame mapped, then verifies its
/// checksum and releases it while the producer fills the next frame. The baselines follow the same rhythm.
/// </remarks>
internal static class ShareCommand
{
    /// <summary>The most frames one run hands over: each measured loop keeps one latency per frame.</summary>
    public const int MaxFrames = 1_000_000;

    /// <summary>The largest pool: each buffer is a live descriptor and mapping in both processes.</summary>
    public const int MaxPool = 256;

    private static readonly TimeSpan s_patience = TimeSpan.FromSeconds(120); // hang guard for a stuck peer

    private static readonly Dictionary<string, (int Width, int Height)> s_resolutions = new(StringComparer.Ordinal)
    {
        ["1080p"] = (1920, 1080),
        ["4k"] = (3840, 2160),
    };

    public static Command Create(IAnsiConsole console, TextWriter stdout, TextWriter stderr)
    {
        var frames = new Option<int>("--frames")
        {
            Description = $"Frames to hand over (and iterations of each baseline), 1 to {MaxFrames:N0}.",
            DefaultValueFactory = _ => 600,
            CustomParser = r => SimulateCommand.ParseCount(r, "--frames", 1, MaxFrames),
        };
        var pool = new Option<int>("--pool")
        {
            Description = $"Frames in the producer's pool, 1 to {MaxPool}.",
            DefaultValueFactory = _ => 20,
            CustomParser = r => SimulateCommand.ParseCount(r, "--pool", 1, MaxPool),
        };

        var resolution = new Option<string>("--resolution") { Description = "Frame size (NV12): 1080p or 4k.", DefaultValueFactory = _ => "1080p" };
        resolution.AcceptOnlyFromAmong([.. s_resolutions.Keys]);

        var exporter = new Option<string>("--exporter")
        {
            Description = "Where frames come from: memfd, dma-heap (/dev/dma_heap/<heap>), udmabuf (/dev/udmabuf) or drm-prime " +
                "(dumb buffers of a DRM card, exported through PRIME).",
            DefaultValueFactory = _ => "memfd",
        };
        exporter.AcceptOnlyFromAmong("memfd", "dma-heap", "udmabuf", "drm-prime");

        var heap = new Option<string>("--heap") { Description = "The dma-buf heap for --exporter dma-heap.", DefaultValueFactory = _ => "system" };
        var drmDriver = new Option<string>("--drm-driver")
        {
            Description = "The DRM driver whose card allocates frames for --exporter drm-prime.",
            DefaultValueFactory = _ => "vgem",
        };
        heap.Validators.Add(r => CheckName(r, "--heap", "system", allowComma: true));
        drmDriver.Validators.Add(r => CheckName(r, "--drm-driver", "vgem", allowComma: false));
        var json = new Option<bool>("--json") { Description = "Print one JSON document instead of a table." };
        var transport = new Option<string>("--transport")
        {
            Description = "socket: the handoff over the socket only; ring: also over the shared-memory control ring, side by side.",
            DefaultValueFactory = _ => "socket",
        };
        transport.AcceptOnlyFromAmong("socket", "ring");
        var wait = new Option<string>("--wait")
        {
            Description = "How the ring's consumer waits: spin (busy-poll), block (sleep, woken only when asleep) or hybrid (spin, then sleep).",
            DefaultValueFactory = _ => "hybrid",
        };
        wait.AcceptOnlyFromAmong("spin", "block", "hybrid");

        var command = new Command(
            "share",
            "Share frames with a second process with no copy, and measure the handoff against a socket round trip, a copy and a re-map.");
        foreach (Option o in new Option[] { frames, pool, resolution, exporter, heap, drmDriver, transport, wait, json })
        {
            command.Options.Add(o);
        }

        command.Validators.Add(r =>
        {
            // The raw token: an exporter that is not one of the choices has its own error, and no value to read.
            string chosen = r.GetResult(exporter) is { Implicit: false, Tokens.Count: > 0 } given ? given.Tokens[0].Value : "memfd";
            if (r.GetResult(heap) is { Implicit: false } && chosen != "dma-heap")
            {
                r.AddError($"--heap applies only to --exporter dma-heap (the exporter is {chosen}); add --exporter dma-heap or drop --heap.");
            }

            if (r.GetResult(drmDriver) is { Implicit: false } && chosen != "drm-prime")
            {
                r.AddError($"--drm-driver applies only to --exporter drm-prime (the exporter is {chosen}); add --exporter drm-prime or drop --drm-driver.");
            }
        });
        command.SetAction(parse => (int)RunProducer(
            console, stdout, stderr,
            new Settings(parse.GetValue(frames), parse.GetValue(pool), parse.GetValue(resolution)!, parse.GetValue(exporter)!, parse.GetValue(heap)!,
                parse.GetValue(drmDriver)!, parse.GetValue(transport) == "ring" ? ParseWait(parse.GetValue(wait)!) : null),
            parse.GetValue(json)));
        command.Subcommands.Add(CreateConsumer(stdout, stderr));
        return command;
    }

    /// <summary>
    /// Refuses a heap or driver name that could not name one device: empty, or with characters other than letters,
    /// digits, '_', '-', '.' (and ',' for heaps, as in "linux,cma"), or '.'/'..'.
    /// </summary>
    private static void CheckName(System.CommandLine.Parsing.OptionResult r, string option, string example, bool allowComma)
    {
        string value = r.GetValueOrDefault<string>() ?? "";
        bool ok = value.Length is > 0 and <= 64 && value is not "." and not ".." &&
            value.All(ch => char.IsAsciiLetterOrDigit(ch) || ch is '_' or '-' or '.' || (allowComma && ch == ','));
        if (!ok)
        {
            string kind = allowComma ? "a dma-buf heap name (an entry of /dev/dma_heap)" : "a DRM driver name";
            r.AddError($"{option} '{value}' is not {kind}: use letters, digits, '_', '-' or '.' (for example '{example}').");
        }
    }

    /// <summary>The hidden consumer side, run by the producer as a second process of the same binary.</summary>
    private static Command CreateConsumer(TextWriter stdout, TextWriter stderr)
    {
        var socket = new Option<string>("--socket") { Description = "Abstract socket name to connect to.", Required = true };
        var frameSize = new Option<long>("--frame-size") { Description = "Bytes per frame.", Required = true };
        var pool = new Option<int>("--pool") { Description = "Frames in the producer's pool (sizes the mapping cache).", Required = true };
        var ringWait = new Option<string?>("--ring-wait") { Description = "Also consume over the ring, waiting this way." };
        ringWait.AcceptOnlyFromAmong("spin", "block", "hybrid");
        var command = new Command("consumer", "The consumer process of 'dmabuf share' (started by it).") { Hidden = true };
        command.Options.Add(socket);
        command.Options.Add(frameSize);
        command.Options.Add(pool);
        command.Options.Add(ringWait);
        command.SetAction(parse => (int)RunConsumer(
            parse.GetValue(socket)!, parse.GetValue(frameSize), parse.GetValue(pool),
            parse.GetValue(ringWait) is string w ? ParseWait(w) : null, stdout, stderr));
        return command;
    }

    private static RingWait ParseWait(string wait) => wait switch
    {
        "spin" => RingWait.Spin,
        "block" => RingWait.Block,
        _ => RingWait.Hybrid,
    };

    private static ExitCode RunProducer(IAnsiConsole console, TextWriter stdout, TextWriter stderr, Settings settings, bool json)
    {
        (int width, int height) = s_resolutions[settings.Resolution];
        long frameSize = (long)width * height * 3 / 2;
        LinuxExporter exporter;
        try
        {
            exporter = CreateExporter(settings);
        }
        catch (FeatureNotAvailableException e)
        {
            stderr.WriteLine($"error: {e.Message}");
            return ExitCode.FeatureMissing;
        }

        try
        {
            int fdsBefore = OpenFds();
            Measurement m = json || !console.Profile.Capabilities.Interactive
                ? Measure(exporter, settings, frameSize, _ => { })
                : WithProgress(console, settings, step => Measure(exporter, settings, frameSize, step));
            (exporter as IDisposable)?.Dispose();
            int producerLeaked = OpenFds() - fdsBefore;
            ShareReport report = Report(settings, exporter.Name, frameSize, m, producerLeaked);
            if (json)
            {
                stdout.WriteLine(JsonSerializer.Serialize(report, ShareJsonContext.Default.ShareReport));
            }
            else
            {
                WriteTable(console, report, m.ConsumerProcessId);
            }

            if (report.FramesFailed > 0 || report.LeakedFds != 0 || report.FramesVerified != settings.Frames
                || (settings.Wait is not null && report.RingFramesVerified != settings.Frames))
            {
                stderr.WriteLine(
                    $"error: safety check failed: {report.FramesVerified} of {settings.Frames} frames verified, {report.FramesFailed} failed, " +
                    $"{report.LeakedFds} descriptors leaked" +
                    (settings.Wait is null ? "." : $"; over the ring {report.RingFramesVerified} of {settings.Frames} verified."));
                return ExitCode.SafetyCheckFailed;
            }

            if (report.ConsumerMappingCache is { Hits: 0, Evictions: > 0 })
            {
                stderr.WriteLine("warning: the consumer's mapping cache never hit: it is smaller than the pool, so every frame was mapped afresh.");
            }

            return ExitCode.Ok;
        }
        catch (Exception e)
        {
            // A system call, the consumer or the channel failed: say what, never a stack trace.
            (exporter as IDisposable)?.Dispose();
            stderr.WriteLine($"error: {e.Message}");
            return ExitCode.SafetyCheckFailed;
        }
    }

    private static LinuxExporter CreateExporter(Settings s)
    {
        LinuxFeatures features = LinuxFeatures.Probe();
        switch (s.Exporter)
        {
            case "dma-heap":
                return new DmaHeapExporter(s.Heap, features: features);
            case "udmabuf":
                return new UdmabufExporter(features: features);
            case "drm-prime":
                return new DrmPrimeExporter(s.DrmDriver, features: features);
            default:
                features.RequireMemfd();
                return new MemfdExporter();
        }
    }

    /// <summary>Runs <paramref name="measure"/> under a progress bar of its measurements (on a terminal only).</summary>
    private static Measurement WithProgress(IAnsiConsole console, Settings s, Func<Action<string>, Measurement> measure)
    {
        int steps = s.Wait is null ? 6 : 7;
        Measurement? result = null;
        console.Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                ProgressTask task = ctx.AddTask($"share: {s.Frames} frames each way, starting the consumer", maxValue: steps);
                result = measure(next =>
                {
                    task.Description = $"share: {next}";
                    task.Increment(1);
                });
                task.Value = steps;
            });
        return result!;
    }

    private static Measurement Measure(LinuxExporter exporter, Settings s, long frameSize, Action<string> step)
    {
        string name = $"dmabuf-share-{Environment.ProcessId}-{Guid.NewGuid():N}";
        using BufferPool pool = BufferPool.Allocate(exporter, s.Pool, frameSize, "frame");
        using BufferChannelListener listener = BufferChannelListener.Listen(name, new BufferChannelOptions { ReturnTo = pool });
        using var copyListener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        copyListener.Bind(new UnixDomainSocketEndPoint("\0" + name + "-copy"));
        copyListener.Listen(1);

        using Process consumer = ShareConsumer.Start(name, frameSize, s.Pool, s.Wait);
        Task<string> output = consumer.StandardOutput.ReadToEndAsync();
        Task<string> errors = consumer.StandardError.ReadToEndAsync();
        var m = new Measurement { ConsumerProcessId = consumer.Id };
        try
        {
            using BufferChannel channel = AcceptFrom(listener, consumer, errors);
            if (channel.Peer.ProcessId != consumer.Id)
            {
                throw new InvalidOperationException($"Process {channel.Peer.ProcessId} connected instead of the consumer {consumer.Id}.");
            }

            if (!copyListener.Poll(s_patience, SelectMode.SelectRead))
            {
                throw new TimeoutException("The consumer did not open its copy connection.");
            }

            using Socket copy = copyListener.Accept();
            step("socket round trip, idle");
            m.IdleRoundTrip = MeasureRoundTrips(channel, pool, s.Frames, firstFrame: 0, rhythm: false);
            step("socket round trip, in rhythm");
            m.RoundTrip = MeasureRoundTrips(channel, pool, s.Frames, firstFrame: 0, rhythm: true);
            step("handoff over the socket");
            m.Handoff = Handoffs.Measure(channel, pool, s.Frames, firstFrame: 0, transient: false, s_patience);
            step("shared-memory floor");
            m.SharedMemory = SharedMemoryFloor.Measure(channel, Math.Max(s.Frames, 1000), s.Frames, frameSize, s_patience);
            channel.ForgetAll(); // the consumer lets go of the cached imports, so every remap below starts from nothing
            step("re-map every frame");
            m.Remap = Handoffs.Measure(channel, pool, s.Frames, firstFrame: s.Frames, transient: true, s_patience).Steady;
            step("copy every frame");
            m.Copy = Copies.Measure(copy, pool, s.Frames, firstFrame: 2L * s.Frames);
            if (s.Wait is RingWait wait)
            {
                step($"handoff over the ring ({wait.ToString().ToLowerInvariant()})");
                m.Ring = RingHandoff.Measure(name, pool, consumer.Id, wait, s.Frames, firstFrame: 3L * s.Frames, s_patience);
            }

            m.DescriptorsSent = channel.Statistics.FdsSent + (m.Ring?.DescriptorsSent ?? 0);
            copy.Shutdown(SocketShutdown.Both);
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

        consumer.WaitForExit();
        string line = output.Result.Split('\n').LastOrDefault(l => l.StartsWith("RESULT ", StringComparison.Ordinal))
            ?? throw new InvalidOperationException($"The consumer reported nothing (exit code {consumer.ExitCode}): {errors.Result.Trim()}");
        m.Consumer = JsonSerializer.Deserialize(line["RESULT ".Length..], ConsumerJsonContext.Default.ConsumerResult)
            ?? throw new InvalidOperationException("The consumer's report is empty.");
        return m;
    }

    /// <summary>Waits for the consumer to connect, and gives up at once, with its error output, if it exits instead.</summary>
    private static BufferChannel AcceptFrom(BufferChannelListener listener, Process consumer, Task<string> errors)
    {
        long deadline = Environment.TickCount64 + (long)s_patience.TotalMilliseconds;
        while (true)
        {
            try
            {
                return listener.Accept(TimeSpan.FromMilliseconds(100));
            }
            catch (TimeoutException) when (Environment.TickCount64 < deadline)
            {
                if (consumer.HasExited)
                {
                    consumer.WaitForExit();
                    throw new InvalidOperationException(
                        $"The consumer process exited with code {consumer.ExitCode} before connecting: {errors.Result.Trim()}");
                }
            }
        }
    }

    /// <summary>
    /// The bare round trip: a 16-byte ping and the 16-byte pong, on the connection the frames use. In
    /// <paramref name="rhythm"/> the producer first writes a frame, as it does before every handoff, so the round trip
    /// meets the same cache and scheduling state; otherwise pings follow one another (the idle figure).
    /// </summary>
    private static double[] MeasureRoundTrips(BufferChannel channel, BufferPool pool, int count, long firstFrame, bool rhythm)
    {
        for (int i = 0; i < 50; i++)
        {
            channel.Ping(s_patience); // warm-up
        }

        double[] times = new double[count];
        for (int k = 0; k < count; k++)
        {
            if (rhythm)
            {
#pragma warning disable CA2000 // borrowed from the pool, which owns and disposes it
                DmaBufHandle frame = Handoffs.Rent(channel, pool, s_patience);
#pragma warning restore CA2000
                Handoffs.Fill(frame, firstFrame + k);
                pool.Return(frame.BufferId);
            }

            long t0 = Stopwatch.GetTimestamp();
            channel.Ping(s_patience);
            times[k] = Handoffs.MicrosecondsSince(t0);
        }

        return times;
    }

    /// <summary>The copy baseline: the frame's bytes through a Unix stream socket, timed until the consumer has them all.</summary>
    private static ExitCode RunConsumer(string socketName, long frameSize, int poolSize, RingWait? ringWait, TextWriter stdout, TextWriter stderr)
    {
        try
        {
            int fdsBefore = OpenFds();
            long page = Environment.SystemPageSize;
            var cache = new MmapCache(((frameSize + page - 1) / page * page) * (poolSize + 1));
            var imports = new ImportCache(cache);
            var tally = new Tally();
            var socketCpu = new FrameCpu();
            var ringCpu = new FrameCpu();
            // The producer's whole pool may be registered here at once, and (while remapping) as many transient deliveries.
            var options = new BufferChannelOptions
            {
                ImportCache = imports,
                MaxRegisteredBuffers = Math.Max(BufferChannelOptions.DefaultMaxRegisteredBuffers, poolSize),
                MaxResidentBytes = Math.Max(BufferChannelOptions.DefaultMaxResidentBytes, 2 * frameSize * poolSize),
            };
            using (BufferChannel channel = BufferChannel.Connect(socketName, options))
            using (var copy = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
            {
                copy.Connect(new UnixDomainSocketEndPoint("\0" + socketName + "-copy"));
                var copier = new Thread(() => ReceiveCopies(copy, frameSize, tally)) { IsBackground = true, Name = "copy baseline" };
                copier.Start();
                Exception? ringFailure = null;
                Thread? ring = null;
                if (ringWait is RingWait wait)
                {
                    ring = new Thread(() =>
                    {
                        try
                        {
                            RingHandoff.Consume(socketName, options, wait, (c, r) => Consume(c, r, tally, ringCpu, ref tally.RingVerified, acknowledge: false), s_patience);
                        }
                        catch (Exception e) when (e is ChannelProtocolException or LinuxErrorException or InvalidOperationException or IOException)
                        {
                            ringFailure = e;
                        }
                    }) { IsBackground = true, Name = "ring consumer" };
                    ring.Start();
                }

                while (channel.Receive() is { } message)
                {
                    if (message is ReceivedBuffer received)
                    {
                        if (SharedMemoryFloor.IsFloorBuffer(received))
                        {
                            SharedMemoryFloor.Answer(channel, received);
                        }
                        else
                        {
                            Consume(channel, received, tally, socketCpu, ref received.IsTransient ? ref tally.RemapVerified : ref tally.Verified, acknowledge: true);
                        }
                    }
                }

                copier.Join();
                ring?.Join();
                if (ringFailure is not null)
                {
                    throw new InvalidOperationException($"ring: {ringFailure.Message}", ringFailure);
                }
            }

            MmapCacheStatistics s = cache.Statistics;
            var result = new ConsumerResult(
                tally.Verified, tally.RemapVerified, tally.CopyVerified, tally.Failed, OpenFds() - fdsBefore,
                new ConsumerCacheReport(s.Hits, s.Misses, s.Evictions, s.MapCalls, s.UnmapCalls, s.LiveMappings),
                tally.RingVerified, Round(socketCpu.MicrosecondsPerFrame), Round(ringCpu.MicrosecondsPerFrame));
            stdout.WriteLine("RESULT " + JsonSerializer.Serialize(result, ConsumerJsonContext.Default.ConsumerResult));
            return tally.Failed == 0 ? ExitCode.Ok : ExitCode.SafetyCheckFailed;
        }
        catch (Exception e)
        {
            stderr.WriteLine($"consumer: {e.Message}");
            return ExitCode.SafetyCheckFailed;
        }
    }

    /// <summary>Maps the frame (a cache hit after the first round of the pool), acknowledges, verifies, releases.</summary>
    /// <remarks>
    /// Registered frames count in <paramref name="cpu"/>: the thread's CPU from one frame's release to the next's arrival.
    /// Without <paramref name="acknowledge"/> the channel has acknowledged already (the ring's channel acknowledges on
    /// receipt); the socket's channel acknowledges here, after the mapping, which the re-map baseline's definition needs.
    /// </remarks>
    private static void Consume(BufferChannel channel, ReceivedBuffer received, Tally tally, FrameCpu cpu, ref int verified, bool acknowledge)
    {
        using (received)
        {
            if (received.HasFrame)
            {
                // An id-only delivery: the registration's one mapping, leased; the acknowledgement goes first (the
                // handoff ends when the consumer holds the frame), the check of its bytes after.
                ReceivedFrame frame = received.Frame;
                if (acknowledge)
                {
                    channel.Acknowledge(received);
                }

                Arrived(cpu, received);
                frame.BeginCpuAccess(CpuAccess.Read);
                bool ok = ShareFramePattern.Checksum(frame.Span) == received.UserData;
                frame.EndCpuAccess(CpuAccess.Read);
                tally.Count(ok, ref verified);
            }
            else
            {
                using CpuMapping map = received.Handle.MapCpu();
                if (acknowledge)
                {
                    channel.Acknowledge(received);
                }

                Arrived(cpu, received);
                received.Handle.BeginCpuAccess(CpuAccess.Read);
                bool ok = ShareFramePattern.Checksum(map.Span) == received.UserData;
                received.Handle.EndCpuAccess(CpuAccess.Read);
                tally.Count(ok, ref verified);
            }
        }

        if (!received.IsTransient)
        {
            cpu.Done();
        }
    }

    /// <summary>Ends the transport's share of the consumer's CPU for this frame: the wait, the receive and the acknowledgement.</summary>
    private static void Arrived(FrameCpu cpu, ReceivedBuffer received)
    {
        if (!received.IsTransient)
        {
            cpu.Arrived();
        }
    }

    private static void ReceiveCopies(Socket copy, long frameSize, Tally tally)
    {
        byte[] header = new byte[16];
        byte[] frame = new byte[frameSize];
        byte[] reply = new byte[16];
        while (Copies.ReceiveExactly(copy, header, endOk: true))
        {
            long size = BinaryPrimitives.ReadInt64LittleEndian(header);
            ulong checksum = BinaryPrimitives.ReadUInt64LittleEndian(header.AsSpan(8));
            if (size != frameSize)
            {
                tally.Count(false, ref tally.CopyVerified);
                return;
            }

            Copies.ReceiveExactly(copy, frame);
            Copies.SendAll(copy, reply);
            tally.Count(ShareFramePattern.Checksum(frame) == checksum, ref tally.CopyVerified);
            Copies.SendAll(copy, reply);
        }
    }

    /// <summary>
    /// Descriptors this command is responsible for: buffers (memfd, dma-buf) and sockets. The runtime's own files
    /// (assemblies it maps, its W^X "doublemapper" memfd, its signal pipe and epoll) open lazily and stay; they are not
    /// ours and a leak check must not count them.
    /// </summary>
    private static int OpenFds()
    {
        int n = 0;
        foreach (string entry in Directory.GetFileSystemEntries("/proc/self/fd"))
        {
            string? target;
            try
            {
                target = new FileInfo(entry).LinkTarget;
            }
            catch (IOException)
            {
                continue; // closed while we looked (the enumeration's own descriptor)
            }

            if (target is not null
                && ((target.StartsWith("/memfd:", StringComparison.Ordinal) && !target.Contains("doublemapper", StringComparison.Ordinal))
                    || target.StartsWith("/dmabuf:", StringComparison.Ordinal)
                    || target.StartsWith("socket:", StringComparison.Ordinal)))
            {
                n++;
            }
        }

        return n;
    }

    private static ShareReport Report(Settings s, string exporter, long frameSize, Measurement m, int producerLeaked)
    {
        double handoff = Percentile(m.Handoff.Steady, 0.50);
        double roundTrip = Percentile(m.RoundTrip, 0.50);
        double copy = Percentile(m.Copy, 0.50);
        double remap = Percentile(m.Remap, 0.50);
        double shm = Percentile(m.SharedMemory.Idle, 0.50);
        double shmInRhythm = Percentile(m.SharedMemory.InRhythm, 0.50);
        ConsumerResult c = m.Consumer!;
        RingReport? ring = null;
        if (m.Ring is RingPhase r)
        {
            double p50 = Percentile(r.Handoff.Steady, 0.50);
            ring = new RingReport(
                s.Wait!.Value.ToString().ToLowerInvariant(), Round(p50), Round(Percentile(r.Handoff.Steady, 0.99)),
                Round(Percentile(r.Handoff.FirstSends, 0.50)), Round(p50 / shm), Round(p50 / shmInRhythm), Round(handoff / p50), Round(copy / p50),
                Round(p50 / Percentile(m.IdleRoundTrip, 0.50)), c.RingCpuUsPerFrame, r.WakeUpsSent);
        }

        return new ShareReport(
            exporter, s.Resolution, frameSize, s.Frames, s.Pool, s.Wait is null ? "socket" : "ring",
            Round(handoff), Round(Percentile(m.Handoff.Steady, 0.99)), Round(Percentile(m.Handoff.FirstSends, 0.50)),
            ring?.HandoffP50Us, ring?.HandoffP99Us,
            Round(roundTrip), Round(Percentile(m.RoundTrip, 0.99)), Round(Percentile(m.IdleRoundTrip, 0.50)),
            Round(shm), Round(Percentile(m.SharedMemory.Idle, 0.99)), Round(shmInRhythm),
            Round(copy), Round(Percentile(m.Copy, 0.99)),
            Round(remap), Round(Percentile(m.Remap, 0.99)),
            Round(handoff / roundTrip), Round(copy / handoff), Round(remap / handoff),
            new ConsumerCpuReport(c.SocketCpuUsPerFrame, ring?.ConsumerCpuUsPerFrame),
            ring,
            c.Verified, c.RemapVerified, c.CopyVerified, c.RingVerified, c.Failed,
            producerLeaked + c.LeakedFds, c.LeakedFds, producerLeaked,
            m.DescriptorsSent, c.Cache);
    }

    private static void WriteTable(IAnsiConsole console, ShareReport r, int consumerPid)
    {
        CultureInfo c = CultureInfo.InvariantCulture;
        var table = new Table().Border(TableBorder.Rounded).Title(
            $"share: {r.Frames} frames of {r.Resolution} NV12 ({r.FrameBytes / 1e6:0.0} MB), pool {r.Pool}, {r.Exporter} buffers, consumer pid {consumerPid}");
        table.AddColumn("way");
        table.AddColumn(new TableColumn("p50").RightAligned());
        table.AddColumn(new TableColumn("p99").RightAligned());
        table.AddColumn(new TableColumn("p50 vs handoff").RightAligned());
        table.AddRow("zero-copy handoff (fd once, then id; cached mmap)", Us(r.HandoffP50Us), Us(r.HandoffP99Us), "1x");
        if (r.Ring is RingReport ring)
        {
            table.AddRow($"  same over the control ring, wait {ring.Wait}", Us(ring.HandoffP50Us), Us(ring.HandoffP99Us),
                $"{ring.SocketHandoffVsRing.ToString("0.0", c)}x faster");
        }

        table.AddRow("  first send of each pool buffer (its descriptor)", Us(r.FirstSendP50Us), "", "");
        table.AddRow("bare shared-memory ping-pong (both busy-polling)", Us(r.SharedMemoryRoundTripP50Us), Us(r.SharedMemoryRoundTripP99Us), "");
        table.AddRow("  same, in rhythm (a frame written and read between)", Us(r.SharedMemoryRoundTripInRhythmP50Us), "", "");
        table.AddRow("bare socket round trip, 16 bytes", Us(r.SocketRoundTripP50Us), Us(r.SocketRoundTripP99Us),
            $"handoff = {r.HandoffVsRoundTrip.ToString("0.00", c)}x it");
        table.AddRow("  same, back to back (no frame work between)", Us(r.SocketRoundTripIdleP50Us), "", "");
        table.AddRow("copy through a Unix stream socket", Us(r.CopyP50Us), Us(r.CopyP99Us), $"{r.CopyVsHandoff.ToString("0.0", c)}x slower");
        table.AddRow("re-map every frame (fd + fresh mmap)", Us(r.RemapP50Us), Us(r.RemapP99Us), $"{r.RemapVsHandoff.ToString("0.0", c)}x slower");
        console.Write(table);
        bool verified = r.FramesVerified == r.Frames && r.FramesFailed == 0;
        console.MarkupLine(
            $"frames verified: {Verdict(verified, $"{r.FramesVerified}/{r.Frames}")} (re-map baseline {r.RemapFramesVerified}, copy baseline {r.CopyFramesVerified}); " +
            $"leaked fds: {Verdict(r.LeakedFds == 0, r.LeakedFds.ToString(c))}; descriptors sent: {r.DescriptorsSent}");
        ConsumerCacheReport k = r.ConsumerMappingCache;
        console.MarkupLine(
            $"consumer CPU per frame: socket {r.ConsumerCpuUsPerFrame.Socket.ToString("0.0", c)} µs" +
            (r.ConsumerCpuUsPerFrame.Ring is double rc ? $", ring {rc.ToString("0.0", c)} µs" : "") +
            (r.Ring is RingReport rr ? $"; ring frames verified: {Verdict(r.RingFramesVerified == r.Frames, $"{r.RingFramesVerified}/{r.Frames}")}" : ""));
        console.MarkupLine($"consumer mmap cache: {k.Hits} hits, {k.Misses} misses, {k.Evictions} evictions, {k.MapCalls} mmaps, {k.UnmapCalls} munmaps");
    }

    private static string Us(double us) => us.ToString(us >= 100 ? "0" : "0.0", CultureInfo.InvariantCulture) + " µs";

    private static string Verdict(bool ok, string text) => ok ? $"[green]{text}[/]" : $"[red]{text}[/]";

    private static double Round(double value) => Math.Round(value, 2);

    private static double Percentile(double[] values, double q) => Handoffs.Percentile(values, q);

    private sealed record Settings(int Frames, int Pool, string Resolution, string Exporter, string Heap, string DrmDriver, RingWait? Wait);

    private sealed class Measurement
    {
        public int ConsumerProcessId { get; init; }

        public double[] RoundTrip { get; set; } = [];

        public double[] IdleRoundTrip { get; set; } = [];

        public HandoffTimes Handoff { get; set; } = new([], []);

        public SharedMemoryTimes SharedMemory { get; set; } = new([], []);

        public RingPhase? Ring { get; set; }

        public double[] Remap { get; set; } = [];

        public double[] Copy { get; set; } = [];

        public long DescriptorsSent { get; set; }

        public ConsumerResult? Consumer { get; set; }
    }

    /// <summary>The consumer's counts; the copy baseline runs on its own thread.</summary>
    private sealed class Tally
    {
        public int Verified;
        public int RemapVerified;
        public int CopyVerified;
        public int Failed;
        public int RingVerified;

        public void Count(bool ok, ref int verified)
        {
            if (ok)
            {
                Interlocked.Increment(ref verified);
            }
            else
            {
                Interlocked.Increment(ref Failed);
            }
        }
    }
}

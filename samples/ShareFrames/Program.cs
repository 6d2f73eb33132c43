// Two processes share frames with no copy. The producer fills a pool of memfd buffers and sends each frame over a
// BufferChannel: the descriptor travels once per buffer, after that only its id. The consumer (this program started
// again with "consume") maps each buffer once, checks every frame and acknowledges it.
using System.Diagnostics;
using DmaBuf;
using DmaBuf.Linux;

const int Frames = 60, Pool = 4, FrameBytes = 1920 * 1080 * 3 / 2; // 1080p NV12

if (args is ["consume", string name])
{
    using BufferChannel channel = BufferChannel.Connect(name);
    int seen = 0;
    while (channel.Receive() is { } message)
    {
        if (message is not ReceivedBuffer frame)
        {
            continue;
        }

        using (frame)
        {
            using CpuMapping map = frame.Handle.MapCpu();
            frame.Handle.BeginCpuAccess(CpuAccess.Read);
            bool ok = map.Span.IndexOfAnyExcept((byte)frame.UserData) < 0; // every byte is the frame number
            frame.Handle.EndCpuAccess(CpuAccess.Read);
            channel.Acknowledge(frame, ok ? 1UL : 0UL);
            seen++;
        }
    }

    Console.WriteLine($"consumer: {seen} frames checked");
    return 0;
}

string socketName = $"dmabuf-sample-{Environment.ProcessId}";
using var listener = BufferChannelListener.Listen(socketName);
using Process consumer = StartSelf("consume", socketName);
using BufferChannel producer = listener.Accept(TimeSpan.FromSeconds(30));

var exporter = new MemfdExporter();
DmaBufHandle[] pool = [.. Enumerable.Range(0, Pool).Select(i => exporter.Allocate(FrameBytes, $"frame{i}"))];
int good = 0;
for (int n = 0; n < Frames; n++)
{
    DmaBufHandle buffer = pool[n % Pool];
    using (CpuMapping map = buffer.MapCpu())
    {
        buffer.BeginCpuAccess(CpuAccess.Write);
        map.Span.Fill((byte)n);
        buffer.EndCpuAccess(CpuAccess.Write);
    }

    long sequence = producer.SendBuffer(buffer, userData: (ulong)(byte)n);
    while (producer.Receive(TimeSpan.FromSeconds(30)) is { } reply)
    {
        if (reply is BufferAcknowledged ack && ack.Sequence == sequence)
        {
            good += (int)ack.UserData;
            break;
        }
    }
}

Console.WriteLine($"producer: {Frames} frames sent from {Pool} buffers ({producer.SharedBuffers} shared with the consumer), {good} checked good");
producer.Dispose(); // goodbye: the consumer's Receive returns null and it exits
consumer.WaitForExit();
Array.ForEach(pool, b => b.Dispose());
return good == Frames && consumer.ExitCode == 0 ? 0 : 1;

static Process StartSelf(params string[] arguments)
{
    // Started as 'dotnet ShareFrames.dll' or as the apphost: start the same thing again.
    string self = Environment.ProcessPath!;
    var info = new ProcessStartInfo(self) { UseShellExecute = false };
    if (Path.GetFileNameWithoutExtension(self) == "dotnet")
    {
        info.ArgumentList.Add(Environment.GetCommandLineArgs()[0]); // the sample's .dll
    }

    foreach (string a in arguments)
    {
        info.ArgumentList.Add(a);
    }

    return Process.Start(info)!;
}

// Capture from a V4L2 camera (vivid, the kernel's virtual one) straight into dma-bufs we allocate, and hand each frame
// to a second process with no copy. The consumer (this program started again with "consume") checks each frame
// against the checksum the producer computed and acknowledges it; the producer then queues the buffer to the camera
// again. Exit code 3 when the machine has no such camera or no dma-buf exporter.
using System.Diagnostics;
using DmaBuf;
using DmaBuf.Linux;
using DmaBuf.Linux.V4l2;

const int Frames = 30, Pool = 4;

if (args is ["consume", string name])
{
    using BufferChannel channel = BufferChannel.Connect(name);
    int seen = 0;
    while (channel.Receive() is { } message)
    {
        if (message is ReceivedBuffer frame)
        {
            using (frame)
            {
                channel.Acknowledge(frame, Checksum(frame.Handle, (int)(frame.UserData >> 32)) == (uint)frame.UserData ? 1UL : 0UL);
                seen++;
            }
        }
    }

    Console.WriteLine($"consumer: {seen} frames checked");
    return 0;
}

try
{
    return Produce();
}
catch (FeatureNotAvailableException e)
{
    Console.Error.WriteLine($"capture-and-share: {e.Message}");
    return 3;
}

static int Produce()
{
    LinuxFeatures features = LinuxFeatures.Probe();
    using V4l2Device camera = V4l2Device.FindCapture("vivid");

    // Frames come from the system dma-buf heap where the kernel has one, else from vgem's dumb buffers.
    LinuxExporter exporter = features.HasDmaHeap("system") ? new DmaHeapExporter("system") : new DrmPrimeExporter("vgem");
    using IDisposable? device = exporter as IDisposable; // both exporters hold their device node open
    V4l2PixFormat format = camera.SetFormat(new V4l2PixFormat(640, 360, V4l2FourCC.Yuyv));
    int count = camera.RequestBuffers(Pool, V4l2Memory.DmaBuf);
    for (int i = 0; i < count; i++)
    {
        using DmaBufHandle buffer = exporter.Allocate(format.SizeImage, $"capture{i}");
        camera.QueueDmaBuf(i, buffer); // the camera keeps a reference of its own
    }

    string socketName = $"dmabuf-capture-{Environment.ProcessId}";
    using var listener = BufferChannelListener.Listen(socketName);
    using Process consumer = StartSelf("consume", socketName);
    using BufferChannel channel = listener.Accept(TimeSpan.FromSeconds(30));

    camera.StreamOn();
    int good = 0;
    for (int n = 0; n < Frames; n++)
    {
        using V4l2Buffer frame = camera.Dequeue(TimeSpan.FromSeconds(5));
        DmaBufHandle pixels = frame.DmaBuf!;
        uint sum = Checksum(pixels, frame.BytesUsed);
        long sequence = channel.SendBuffer(pixels, userData: ((ulong)frame.BytesUsed << 32) | sum);
        while (channel.Receive(TimeSpan.FromSeconds(30)) is { } reply)
        {
            if (reply is BufferAcknowledged ack && ack.Sequence == sequence)
            {
                good += (int)ack.UserData;
                break;
            }
        }

        camera.QueueDmaBuf(frame.Index, pixels); // back to the camera once the consumer has checked it
    }

    camera.StreamOff();
    Console.WriteLine($"producer: {Frames} frames captured from {camera.Path} into {exporter.Name} buffers and shared, {good} checked good");
    channel.Dispose();
    consumer.WaitForExit();
    return good == Frames && consumer.ExitCode == 0 ? 0 : 1;
}

static uint Checksum(DmaBufHandle buffer, int length)
{
    using CpuMapping map = buffer.MapCpu();
    buffer.BeginCpuAccess(CpuAccess.Read);
    uint sum = 2166136261;
    foreach (byte b in map.Span[..length])
    {
        sum = (sum ^ b) * 16777619; // FNV-1a
    }

    buffer.EndCpuAccess(CpuAccess.Read);
    return sum;
}

static Process StartSelf(params string[] arguments)
{
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

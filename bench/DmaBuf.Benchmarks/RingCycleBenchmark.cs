using BenchmarkDotNet.Attributes;
using DmaBuf.Linux;

namespace DmaBuf.Benchmarks;

/// <summary>
/// The software of one whole ring handoff with no waiting in it: both ends of a ring channel pair on one thread, so
/// every entry is there when it is looked for. One cycle is what a frame costs the two sides after its descriptor went
/// once: send an id, receive it (the lease on the registration's mapping), acknowledge, receive the acknowledgement,
/// release, receive the release (the buffer back in the pool). <c>dmabuf share</c> times the part up to the
/// acknowledgement; the release comes while the consumer reads the frame. With a bare ping-pong
/// floor of 0.1–0.5 µs between two CPUs, this is the software a handoff adds to it.
/// </summary>
[MemoryDiagnoser]
public class RingCycleBenchmark
{
    private MemfdExporter _exporter = null!;
    private BufferPool _pool = null!;
    private BufferChannel _sender = null!;
    private BufferChannel _receiver = null!;
    private DmaBufHandle _frame = null!;

    [GlobalSetup]
    public void Setup()
    {
        _exporter = new MemfdExporter(new MmapCache());
        _pool = BufferPool.Allocate(_exporter, 1, 4096);
        (_sender, _receiver) = BufferChannel.CreatePair(
            new BufferChannelOptions { Transport = ChannelTransport.Ring, Wait = RingWait.Spin, ReturnTo = _pool },
            new BufferChannelOptions { Transport = ChannelTransport.Ring, Wait = RingWait.Spin, ImportCache = new ImportCache(new MmapCache()) });
        if (!_pool.TryRent(out DmaBufHandle? frame))
        {
            throw new InvalidOperationException("The pool has no buffer.");
        }

        _frame = frame;
        Cycle(); // the first send carries the descriptor; every measured one carries the id only
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _sender.Dispose();
        _receiver.Dispose();
        _pool.Dispose();
    }

    /// <summary>Send, receive, read the frame's first byte through the delivery, acknowledge, receive the acknowledgement, release, receive the release.</summary>
    [Benchmark]
    public long Cycle()
    {
        long sequence = _sender.SendBuffer(_frame, 7);
        var received = (ReceivedBuffer)_receiver.Receive()!;
        byte first = received.Frame.Span[0];
        _receiver.Acknowledge(received);
        var ack = (BufferAcknowledged)_sender.Receive()!;
        received.Dispose();
        _ = (BufferReleased)_sender.Receive()!;
        if (!_pool.TryRent(out DmaBufHandle? again) || !ReferenceEquals(again, _frame))
        {
            throw new InvalidOperationException("The released buffer did not come back to the pool.");
        }

        return ack.Sequence - sequence + first;
    }
}

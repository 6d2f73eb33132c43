using BenchmarkDotNet.Attributes;
using DmaBuf.Linux;

namespace DmaBuf.Benchmarks;

/// <summary>
/// The consumer's side of a handoff that carries only a buffer id: from the id to the mapped frame. The receive path
/// looks the id up in the channel's ledger (the registration made when the descriptor came), hands the caller its own
/// reference (<see cref="DmaBufHandle.Duplicate"/>, in the <see cref="ReceivedBuffer"/>), and the consumer maps it
/// (<c>MapCpu</c>, a hit in the mapping cache after the first frame). Each case ends what it began (disposes the
/// reference and the mapping). Target: the lookup at most 100 ns, 0 bytes allocated; <see cref="IdToRegisteredFrame"/> is the path an id-only
/// delivery takes now (the registration's one mapping, leased), the other cases are the steps of the old path. The frame is 4K NV12 in a memfd,
/// registered over a ring channel made in this process.
/// </summary>
[MemoryDiagnoser]
public class ConsumerLookupBenchmark
{
    private const long FrameBytes = 3840L * 2160 * 3 / 2;

    private static readonly Func<DmaBufHandle, DmaBufHandle> s_same = h => h;

    private MemfdExporter _exporter = null!;
    private DmaBufHandle _frame = null!;
    private BufferChannel _sender = null!;
    private BufferChannel _receiver = null!;
    private ReceivedBuffer _received = null!;
    private ChannelLedger<DmaBufHandle> _ledger = null!;
    private long _id;

    [GlobalSetup]
    public void Setup()
    {
        _exporter = new MemfdExporter(new MmapCache());
        _frame = _exporter.Allocate(FrameBytes);
        (_sender, _receiver) = BufferChannel.CreatePair(
            new BufferChannelOptions { Transport = ChannelTransport.Ring },
            new BufferChannelOptions { Transport = ChannelTransport.Ring, ImportCache = new ImportCache(new MmapCache()) });
        _sender.SendBuffer(_frame);
        _received = (ReceivedBuffer)_receiver.Receive(TimeSpan.FromSeconds(10))!;
        _id = _received.RemoteBufferId;
        _ledger = _receiver.Ledger;
        using CpuMapping first = _received.Handle.MapCpu(); // the miss: every measured map is a hit
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _received.Dispose();
        _receiver.Dispose();
        _sender.Dispose();
        _frame.Dispose();
    }

    /// <summary>The ledger's lookup of a registered id alone (checked against its size), no reference taken.</summary>
    [Benchmark(Baseline = true)]
    public DmaBufHandle LedgerLookup() => _ledger.DeliverRegistered(_id, FrameBytes, s_same);

    /// <summary>The lookup and the caller's own reference, as a delivery takes it, then dropped.</summary>
    [Benchmark]
    public long LookupAndReference()
    {
        using DmaBufHandle h = _ledger.DeliverRegistered(_id, FrameBytes, static r => r.Duplicate());
        return h.BufferId;
    }

    /// <summary>Mapping a received frame: a hit in the mapping cache, then unmapped (the cache keeps it).</summary>
    [Benchmark]
    public int MapHit()
    {
        using CpuMapping map = _received.Handle.MapCpu();
        return map.Span.Length;
    }

    /// <summary>
    /// The whole way from the id to the mapped frame as an id-only delivery now takes it: the lookup leases the
    /// registration's one mapping (pooled, numbered per use), the frame is read through it, and the lease goes back.
    /// </summary>
    [Benchmark]
    public int IdToRegisteredFrame()
    {
        FrameLease lease = _ledger.LeaseRegistered(_id, FrameBytes)!;
        long generation = lease.Generation;
        int length = new ReceivedFrame(lease, generation).Span.Length;
        lease.Dispose(generation);
        return length;
    }

    /// <summary>The whole way from the id to the mapped frame the old way: lookup, reference, map, and back.</summary>
    [Benchmark]
    public int IdToMappedFrame()
    {
        using DmaBufHandle h = _ledger.DeliverRegistered(_id, FrameBytes, static r => r.Duplicate());
        using CpuMapping map = h.MapCpu();
        return map.Span.Length;
    }
}

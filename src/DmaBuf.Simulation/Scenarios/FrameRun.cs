using System.Buffers;
using System.Buffers.Binary;

namespace DmaBuf.Simulation;

/// <summary>
/// The per-frame pipeline of a scenario on the SoC's clock, with implicit synchronization through each buffer's
/// reservation object (as the kernel does for dma-bufs): the producer's DMA write is a job whose WRITE fence signals
/// when its last burst lands; the CPU then stamps the frame (inside CPU access brackets); readers start when the write
/// fence signals and add READ fences; the producer's next write into the same buffer waits for all of them. Without
/// fences every job starts at once; without cache sync the CPU skips cache maintenance: either way readers see what is
/// really in memory then.
/// </summary>
internal sealed class FrameRun
{
    /// <summary>Bytes the CPU writes after the frame: a magic and the frame number.</summary>
    public const int StampBytes = 16;

    private const uint StampMagic = 0x504D_5453; // "STMP"

    private readonly Soc _soc;
    private readonly MappingStrategy _strategy;
    private readonly SimDevice _producer;
    private readonly SimDevice[] _readers;
    private readonly long[] _holdNs;
    private readonly ScenarioOptions _options;
    private readonly Dictionary<SimDevice, FenceTimeline> _timelines = [];
    private readonly byte[] _template = new byte[PhysicalMemory.PageSize];

    public FrameRun(Soc soc, MappingStrategy strategy, SimDevice producer, SimDevice[] readers, long[] holdNs, ScenarioOptions options)
    {
        _soc = soc;
        _strategy = strategy;
        _producer = producer;
        _readers = readers;
        _holdNs = holdNs;
        _options = options;
        foreach (SimDevice d in (SimDevice[])[producer, .. readers])
        {
            _timelines[d] = new FenceTimeline(d.Name);
        }
    }

    /// <summary>Frames every reader saw intact.</summary>
    public long FramesVerified { get; private set; }

    /// <summary>Reader checks that saw other content than the frame's.</summary>
    public long StaleReads { get; private set; }

    /// <summary>Of <see cref="StaleReads"/>: reads whose pixels were not the frame's (the read overtook the write).</summary>
    public long OvertakingReads { get; private set; }

    /// <summary>Of <see cref="StaleReads"/>: reads with the frame's pixels but not the CPU's stamp (it stayed in the CPU cache).</summary>
    public long CacheLineReads { get; private set; }

    /// <summary>
    /// Submits frame <paramref name="frame"/> into <paramref name="buffer"/>. As a kernel driver queues a job, the fences
    /// go into the reservation object at submission: the write depends on every fence already there, the reads depend on
    /// the write, and the next submission depends on all of them.
    /// </summary>
    public void Submit(DmaBufHandle buffer, int frame, int frameBytes)
    {
        DmaBufHandle use = buffer.Duplicate();
        IReadOnlyList<Fence> before = _options.Fences ? use.Buffer.Resv.GetFences(FenceUsage.Read) : [];
        Fence written = _timelines[_producer].CreateFence();
        AddFence(use, written, FenceUsage.Write);
        Fence[] reads = new Fence[_readers.Length];
        for (int i = 0; i < reads.Length; i++)
        {
            reads[i] = _timelines[_readers[i]].CreateFence();
            AddFence(use, reads[i], FenceUsage.Read);
        }

        // The readers' side holds its own reference: the producer lets go of its own when its write completes.
        DmaBufHandle forReaders = use.Duplicate();
        var state = new FrameState(_readers.Length);
        void Readers()
        {
            Stamp(forReaders, frame, frameBytes);
            for (int i = 0; i < _readers.Length; i++)
            {
                Read(_readers[i], _holdNs[i], forReaders, frame, frameBytes, state, reads[i]);
            }

            forReaders.Dispose();
        }

        WhenAll(before, () => Write(use, frame, frameBytes, written));
        if (!_options.Fences || written.AddCallback(_ => Readers()) is null)
        {
            Readers();
        }
    }

    private void Write(DmaBufHandle use, int frame, int frameBytes, Fence written)
    {
        ScatterTable map = _strategy.Acquire(_producer, use, DmaDirection.FromDevice);
        byte[] data = ArrayPool<byte>.Shared.Rent(frameBytes);
        FramePattern.Fill(data.AsSpan(0, frameBytes), _options.Seed, frame, _template);
        _producer.StartDmaWrite(map, 0, data.AsMemory(0, frameBytes), _ =>
        {
            _strategy.Release(_producer, use, map);
            use.Dispose();
            ArrayPool<byte>.Shared.Return(data);
            written.Signal();
        });
    }

    private void Stamp(DmaBufHandle use, int frame, int frameBytes)
    {
        Span<byte> stamp = stackalloc byte[StampBytes];
        BinaryPrimitives.WriteUInt32LittleEndian(stamp, StampMagic);
        BinaryPrimitives.WriteInt32LittleEndian(stamp[4..], frame);
        BinaryPrimitives.WriteInt64LittleEndian(stamp[8..], _options.Seed);
        using IDmaBufCpuView view = use.Vmap();
        if (_options.CacheSync)
        {
            use.BeginCpuAccess(CpuAccess.Write);
        }

        view.Write(frameBytes, stamp);
        if (_options.CacheSync)
        {
            use.EndCpuAccess(CpuAccess.Write);
        }
    }

    // A consumer reads the frame, checks it, and holds it for holdNs (its mapping in use, its read fence unsignalled)
    // before it lets go, as a display keeps a frame on screen until the next one.
    private void Read(SimDevice reader, long holdNs, DmaBufHandle buffer, int frame, int frameBytes, FrameState state, Fence read)
    {
        DmaBufHandle use = buffer.Duplicate();
        ScatterTable map = _strategy.Acquire(reader, use, DmaDirection.ToDevice);
        int length = frameBytes + StampBytes;
        byte[] destination = ArrayPool<byte>.Shared.Rent(length);
        void Done(bool ok)
        {
            // The frame's pixels come from the producer's DMA; its stamp from the CPU. Wrong pixels mean the read ran
            // before the write landed (no fence waited); right pixels with a wrong stamp mean the CPU's write never left
            // its cache (no cache maintenance).
            bool pixels = ok && FramePattern.Verify(destination.AsSpan(0, frameBytes), _options.Seed, frame, _template);
            bool good = pixels && StampMatches(destination.AsSpan(frameBytes, StampBytes), frame);
            ArrayPool<byte>.Shared.Return(destination);
            if (!good)
            {
                StaleReads++;
                if (ok && !pixels)
                {
                    OvertakingReads++;
                }
                else if (ok)
                {
                    CacheLineReads++;
                }

                state.AllGood = false;
            }

            if (--state.Pending == 0 && state.AllGood)
            {
                FramesVerified++;
            }

            if (holdNs == 0)
            {
                LetGo();
            }
            else
            {
                _soc.Clock.ScheduleAfter(holdNs, LetGo);
            }
        }

        void LetGo()
        {
            _strategy.Release(reader, use, map);
            use.Dispose();
            read.Signal();
        }

        if (reader.ChainFormat is not null)
        {
            reader.StartDmaReadChain(_strategy.AcquireChain(reader, use, map), destination.AsMemory(0, length), Done);
        }
        else
        {
            reader.StartDmaRead(map, 0, destination.AsMemory(0, length), Done);
        }
    }

    private bool StampMatches(ReadOnlySpan<byte> stamp, int frame) =>
        BinaryPrimitives.ReadUInt32LittleEndian(stamp) == StampMagic &&
        BinaryPrimitives.ReadInt32LittleEndian(stamp[4..]) == frame &&
        BinaryPrimitives.ReadInt64LittleEndian(stamp[8..]) == _options.Seed;

    private void AddFence(DmaBufHandle use, Fence fence, FenceUsage usage)
    {
        if (!_options.Fences)
        {
            return;
        }

        ReservationObject resv = use.Buffer.Resv;
        using OrderedLock.Scope scope = resv.Lock.Enter();
        resv.Reserve(1);
        resv.AddFence(fence, usage);
    }

    private static void WhenAll(IReadOnlyList<Fence> fences, Action then)
    {
        int pending = fences.Count + 1;
        void One()
        {
            if (--pending == 0)
            {
                then();
            }
        }

        foreach (Fence f in fences)
        {
            if (f.AddCallback(_ => One()) is null)
            {
                One();
            }
        }

        One();
    }

    private sealed class FrameState(int readers)
    {
        public int Pending { get; set; } = readers;

        public bool AllGood { get; set; } = true;
    }
}

namespace DmaBuf.Simulation;

/// <summary>The kinds of DMA devices on the simulated SoC.</summary>
public enum DeviceKind
{
    /// <summary>Video decoder (VPU): writes frames.</summary>
    Decoder,

    /// <summary>Display controller: reads frames for scan-out.</summary>
    Display,

    /// <summary>GPU: reads and writes.</summary>
    Gpu,

    /// <summary>Camera image signal processor: writes frames.</summary>
    Isp,

    /// <summary>Video encoder: reads frames.</summary>
    Encoder,

    /// <summary>Neural processing unit: reads frames (and may write results).</summary>
    Npu,
}

/// <summary>
/// A DMA device of the simulated SoC. Its DMA engine moves real bytes through its address space: every access is
/// translated page by page, so an unmapped or read-only address is a recorded fault and a freed page is a counted
/// safety violation. A transfer takes simulated time at the device's bandwidth.
/// </summary>
public sealed class SimDevice : IDmaDevice
{
    private readonly SimClock _clock;

    /// <summary>Creates a device.</summary>
    /// <param name="name">Device name.</param>
    /// <param name="kind">What it is.</param>
    /// <param name="addressSpace">Where its DMA goes: an IOMMU domain or direct.</param>
    /// <param name="clock">The SoC clock its transfers take time on.</param>
    /// <param name="bytesPerSecond">DMA bandwidth.</param>
    /// <param name="isCoherent">Whether it snoops CPU caches.</param>
    public SimDevice(string name, DeviceKind kind, ISimAddressSpace addressSpace, SimClock clock, long bytesPerSecond, bool isCoherent = false)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bytesPerSecond);
        Name = name;
        Kind = kind;
        SimAddressSpace = addressSpace;
        _clock = clock;
        BytesPerSecond = bytesPerSecond;
        IsCoherent = isCoherent;
    }

    /// <inheritdoc/>
    public string Name { get; }

    /// <summary>What the device is.</summary>
    public DeviceKind Kind { get; }

    /// <inheritdoc/>
    public IDmaAddressSpace AddressSpace => SimAddressSpace;

    /// <summary>The address space with its DMA entry points.</summary>
    public ISimAddressSpace SimAddressSpace { get; }

    /// <inheritdoc/>
    public bool IsCoherent { get; }

    /// <summary>The descriptor-chain format of the device's DMA engine, or null if it takes plain address lists.</summary>
    public DescriptorChainFormat? ChainFormat { get; init; }

    /// <summary>DMA bandwidth in bytes per second.</summary>
    public long BytesPerSecond { get; }

    /// <summary>Bytes moved by this device's DMA engine.</summary>
    public long BytesTransferred { get; private set; }

    /// <summary>
    /// Writes <paramref name="data"/> at <paramref name="offset"/> of a buffer mapped for this device at
    /// <paramref name="mapping"/> (device addresses). Returns false if the transfer faulted part way.
    /// </summary>
    public bool DmaWrite(ScatterTable mapping, long offset, ReadOnlySpan<byte> data) => DmaWrite(mapping, offset, data, advance: true);

    private bool DmaWrite(ScatterTable mapping, long offset, ReadOnlySpan<byte> data, bool advance)
    {
        bool ok = true;
        List<(ulong Address, int Start, int Count)> pieces = Walk(mapping, offset, data.Length);
        foreach ((ulong address, int start, int count) in pieces)
        {
            if (!SimAddressSpace.DmaWrite(address, data.Slice(start, count)))
            {
                ok = false;
                break;
            }
        }

        if (advance)
        {
            Account(data.Length);
        }

        return ok;
    }

    /// <summary>
    /// Reads into <paramref name="destination"/> from <paramref name="offset"/> of a buffer mapped for this device at
    /// <paramref name="mapping"/>. Returns false if the transfer faulted part way.
    /// </summary>
    public bool DmaRead(ScatterTable mapping, long offset, Span<byte> destination) => DmaRead(mapping, offset, destination, advance: true);

    private bool DmaRead(ScatterTable mapping, long offset, Span<byte> destination, bool advance)
    {
        bool ok = true;
        List<(ulong Address, int Start, int Count)> pieces = Walk(mapping, offset, destination.Length);
        foreach ((ulong address, int start, int count) in pieces)
        {
            if (!SimAddressSpace.DmaRead(address, destination.Slice(start, count)))
            {
                ok = false;
                break;
            }
        }

        if (advance)
        {
            Account(destination.Length);
        }

        return ok;
    }

    /// <summary>Bytes a DMA engine moves per burst in an asynchronous transfer: what lands in memory at once.</summary>
    public const int BurstBytes = 64 * 1024;

    private long _busyUntilNs;

    /// <summary>
    /// Starts an asynchronous write of <paramref name="data"/> at <paramref name="offset"/> of the mapping. The engine
    /// runs its jobs in order; each 64 KiB burst lands in memory at its own simulated time, so a reader that runs
    /// concurrently sees exactly what has landed. <paramref name="completed"/> runs (on the clock) when the last burst
    /// landed, with false if a burst faulted. The caller keeps <paramref name="data"/> unchanged until then.
    /// </summary>
    public void StartDmaWrite(ScatterTable mapping, long offset, ReadOnlyMemory<byte> data, Action<bool> completed) =>
        StartJob(data.Length, (start, count) => DmaWrite(mapping, offset + start, data.Span.Slice(start, count), advance: false), completed);

    /// <summary>
    /// Starts an asynchronous read into <paramref name="destination"/>; bursts are read from memory at their own
    /// simulated times. <paramref name="completed"/> runs when the last burst was read, with false on a fault.
    /// </summary>
    public void StartDmaRead(ScatterTable mapping, long offset, Memory<byte> destination, Action<bool> completed) =>
        StartJob(destination.Length, (start, count) => DmaRead(mapping, offset + start, destination.Span.Slice(start, count), advance: false), completed);

    /// <summary>As <see cref="StartDmaRead"/>, walking a descriptor chain.</summary>
    public void StartDmaReadChain(DescriptorChain chain, Memory<byte> destination, Action<bool> completed)
    {
        ArgumentNullException.ThrowIfNull(chain);
        StartJob(destination.Length, (start, count) => ReadChainRange(chain, start, destination.Span.Slice(start, count)), completed);
    }

    private void StartJob(int length, Func<int, int, bool> burst, Action<bool> completed)
    {
        long burstNs = Math.Max(1, BurstBytes * 1_000_000_000L / BytesPerSecond);
        long start = Math.Max(_clock.NowNs, _busyUntilNs);
        int bursts = Math.Max(1, (length + BurstBytes - 1) / BurstBytes);
        _busyUntilNs = start + (bursts * burstNs);
        bool ok = true;
        for (int i = 0; i < bursts; i++)
        {
            int first = i * BurstBytes;
            int count = Math.Min(BurstBytes, length - first);
            bool last = i == bursts - 1;
            _clock.Schedule(start + ((i + 1) * burstNs), () =>
            {
                if (ok && count > 0)
                {
                    ok = burst(first, count);
                    BytesTransferred += count;
                }

                if (last)
                {
                    completed(ok);
                }
            });
        }
    }

    private bool ReadChainRange(DescriptorChain chain, int start, Span<byte> destination)
    {
        int position = 0, done = 0;
        foreach (Descriptor d in chain.Descriptors)
        {
            if (done == destination.Length)
            {
                break;
            }

            int end = position + d.Length;
            if (end > start + done)
            {
                int within = start + done - position;
                int n = Math.Min(d.Length - within, destination.Length - done);
                if (!SimAddressSpace.DmaRead(d.DeviceAddress + (ulong)within, destination.Slice(done, n)))
                {
                    return false;
                }

                done += n;
            }

            position = end;
        }

        return done == destination.Length;
    }

    /// <summary>
    /// Builds a descriptor chain for <paramref name="mapping"/> in this device's format, charging the build time to the
    /// clock.
    /// </summary>
    /// <exception cref="InvalidOperationException">The device has no chain format.</exception>
    public DescriptorChain BuildChain(ScatterTable mapping)
    {
        DescriptorChainFormat format = ChainFormat ?? throw new InvalidOperationException($"{Name} has no descriptor-chain format.");
        var chain = DescriptorChain.Build(format, AddressSpace.Id, mapping);
        _clock.Advance(chain.BuildNs);
        return chain;
    }

    /// <summary>
    /// Reads the buffer described by <paramref name="chain"/> into <paramref name="destination"/>, descriptor by
    /// descriptor, the way the DMA engine walks a chain. A chain built for another address space or a stale mapping
    /// faults or reads the wrong bytes — nothing checks it for the device. Returns false if a descriptor faulted.
    /// </summary>
    public bool DmaReadChain(DescriptorChain chain, Span<byte> destination)
    {
        ArgumentNullException.ThrowIfNull(chain);
        int done = 0;
        bool ok = true;
        foreach (Descriptor d in chain.Descriptors)
        {
            if (done >= destination.Length)
            {
                break;
            }

            int n = Math.Min(d.Length, destination.Length - done);
            if (!SimAddressSpace.DmaRead(d.DeviceAddress, destination.Slice(done, n)))
            {
                ok = false;
                break;
            }

            done += n;
        }

        Account(destination.Length);
        return ok;
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Name} ({Kind})";

    private void Account(int bytes)
    {
        BytesTransferred += bytes;
        _clock.Advance(bytes * 1_000_000_000L / BytesPerSecond);
    }

    private static List<(ulong, int, int)> Walk(ScatterTable mapping, long offset, int count)
    {
        if (offset < 0 || (ulong)offset + (ulong)count > mapping.TotalLength)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"DMA of {count} bytes at {offset} is outside a {mapping.TotalLength}-byte mapping.");
        }

        var pieces = new List<(ulong, int, int)>(mapping.Count);
        int start = 0;
        foreach (ScatterSegment run in mapping.GetRange((ulong)offset, (ulong)count))
        {
            pieces.Add((run.Address, start, (int)run.Length));
            start += (int)run.Length;
        }

        return pieces;
    }
}

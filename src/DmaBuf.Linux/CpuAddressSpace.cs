namespace DmaBuf.Linux;

/// <summary>
/// The address space of CPU-side "devices" in this process (a software decoder, a compositor's CPU path): a direct
/// address space whose device addresses are this process's virtual addresses. It is named <c>cpu</c>.
/// </summary>
/// <remarks>
/// Linux exporters map a buffer for such a device by leasing the buffer's mapping from the mmap cache and handing the
/// virtual address range of that mapping to <see cref="Map"/>, which returns it unchanged (direct: no translation) and
/// records it as live until <see cref="Unmap"/>. While the mapping is live the memory stays mapped, even if the mmap
/// cache evicts it. <see cref="CpuDevice"/> reads and writes through a live mapping, checked against this record.
/// </remarks>
public sealed class CpuAddressSpace : IDmaAddressSpace
{
    private static long s_nextId = 1L << 40; // apart from other address spaces' ids in logs

    private readonly OrderedLock _lock = new(LockLevel.AddressSpace, "cpu address space");
    private readonly HashSet<ScatterTable> _live = new(ReferenceEqualityComparer.Instance);

    /// <summary>Creates an address space; most code uses <see cref="Process"/>.</summary>
    public CpuAddressSpace() => Id = Interlocked.Increment(ref s_nextId);

    /// <summary>This process's CPU address space.</summary>
    public static CpuAddressSpace Process { get; } = new();

    /// <inheritdoc/>
    public long Id { get; }

    /// <inheritdoc/>
    public string Name => "cpu";

    /// <summary>Mappings handed out and not yet unmapped.</summary>
    public int LiveMappings
    {
        get
        {
            using OrderedLock.Scope scope = _lock.Enter();
            return _live.Count;
        }
    }

    /// <summary>
    /// Returns the device addresses of <paramref name="physical"/>, which for this address space are the process
    /// addresses it already holds (a direct mapping), and records the mapping as live.
    /// </summary>
    public ScatterTable Map(ScatterTable physical, DmaDirection direction)
    {
        ArgumentNullException.ThrowIfNull(physical);
        var mapped = new ScatterTable(physical.Segments);
        using OrderedLock.Scope scope = _lock.Enter();
        _live.Add(mapped);
        return mapped;
    }

    /// <inheritdoc/>
    public void Unmap(ScatterTable mapped, DmaDirection direction)
    {
        ArgumentNullException.ThrowIfNull(mapped);
        using OrderedLock.Scope scope = _lock.Enter();
        if (!_live.Remove(mapped))
        {
            throw new ArgumentException("The table is not a live mapping of the cpu address space.", nameof(mapped));
        }
    }

    /// <summary>Whether <paramref name="mapped"/> is a live mapping of this address space.</summary>
    public bool IsLive(ScatterTable mapped)
    {
        using OrderedLock.Scope scope = _lock.Enter();
        return _live.Contains(mapped);
    }
}

/// <summary>
/// A CPU-side device: it "does DMA" by copying to and from process memory through a mapping of the
/// <see cref="CpuAddressSpace"/>. Linux exporters accept only such devices; real DMA needs a kernel driver.
/// </summary>
/// <param name="name">Device name.</param>
/// <param name="addressSpace">Its address space; <see cref="CpuAddressSpace.Process"/> when null.</param>
public sealed class CpuDevice(string name, CpuAddressSpace? addressSpace = null) : IDmaDevice
{
    private readonly CpuAddressSpace _space = addressSpace ?? CpuAddressSpace.Process;

    /// <inheritdoc/>
    public string Name { get; } = name;

    /// <inheritdoc/>
    public IDmaAddressSpace AddressSpace => _space;

    /// <summary>CPU caches are coherent with themselves.</summary>
    public bool IsCoherent => true;

    /// <summary>Copies bytes at <paramref name="offset"/> of a live mapping into <paramref name="destination"/>.</summary>
    /// <exception cref="ArgumentException"><paramref name="mapped"/> is not live in this device's address space.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The range is outside the mapping.</exception>
    public unsafe void Read(ScatterTable mapped, long offset, Span<byte> destination)
    {
        CheckAccess(mapped, offset, destination.Length);
        foreach ((nint address, int at, int n) in Pieces(mapped, offset, destination.Length))
        {
            new ReadOnlySpan<byte>((void*)address, n).CopyTo(destination.Slice(at, n));
        }
    }

    /// <summary>Copies <paramref name="source"/> into a live mapping at <paramref name="offset"/>.</summary>
    /// <exception cref="ArgumentException"><paramref name="mapped"/> is not live in this device's address space.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The range is outside the mapping.</exception>
    public unsafe void Write(ScatterTable mapped, long offset, ReadOnlySpan<byte> source)
    {
        CheckAccess(mapped, offset, source.Length);
        foreach ((nint address, int at, int n) in Pieces(mapped, offset, source.Length))
        {
            source.Slice(at, n).CopyTo(new Span<byte>((void*)address, n));
        }
    }

    private void CheckAccess(ScatterTable mapped, long offset, int length)
    {
        ArgumentNullException.ThrowIfNull(mapped);
        if (!_space.IsLive(mapped))
        {
            throw new ArgumentException($"{Name}: the table is not a live mapping of its address space.", nameof(mapped));
        }

        if (offset < 0 || (ulong)offset + (ulong)length > mapped.TotalLength)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"Range [{offset}, +{length}) is outside the {mapped.TotalLength}-byte mapping.");
        }
    }

    /// <summary>The pieces (address, offset in the caller's span, length) of the segments that cover the range.</summary>
    private static List<(nint Address, int At, int Length)> Pieces(ScatterTable mapped, long offset, int length)
    {
        var pieces = new List<(nint, int, int)>();
        ulong skip = (ulong)offset;
        int done = 0;
        foreach (ScatterSegment s in mapped.Segments)
        {
            if (done == length)
            {
                break;
            }

            if (skip >= s.Length)
            {
                skip -= s.Length;
                continue;
            }

            int n = (int)Math.Min(s.Length - skip, (ulong)(length - done));
            pieces.Add(((nint)(s.Address + skip), done, n));
            done += n;
            skip = 0;
        }

        return pieces;
    }
}

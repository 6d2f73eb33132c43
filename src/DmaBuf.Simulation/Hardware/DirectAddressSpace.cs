namespace DmaBuf.Simulation;

/// <summary>
/// A device without an IOMMU in front of it: device addresses are physical addresses, mapping costs nothing and
/// writes no page table, and the device can reach all of memory (so reach counts do not apply).
/// </summary>
/// <remarks>
/// <see cref="Map"/> returns the physical table itself. Mappings are still tracked, so that <see cref="Unmap"/> of a
/// table that is not mapped is caught. Faults are accesses outside the memory.
/// </remarks>
public sealed class DirectAddressSpace : ISimAddressSpace
{
    private readonly PhysicalMemory _memory;
    private readonly SimStats _stats;
    private readonly OrderedLock _lock;
    private readonly Dictionary<ScatterTable, int> _live = new(ReferenceEqualityComparer.Instance);
    private readonly List<DmaFault> _faults = [];

    /// <summary>Creates the address space.</summary>
    public DirectAddressSpace(string name, PhysicalMemory memory, SimStats stats)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(memory);
        ArgumentNullException.ThrowIfNull(stats);
        Name = name;
        _memory = memory;
        _stats = stats;
        _lock = new OrderedLock(LockLevel.AddressSpace, $"direct address space {name}");
        Id = AddressSpaceIds.Next();
    }

    /// <inheritdoc/>
    public long Id { get; }

    /// <inheritdoc/>
    public string Name { get; }

    /// <summary>Mappings made and not yet unmapped.</summary>
    public int LiveMappings
    {
        get
        {
            using OrderedLock.Scope scope = _lock.Enter();
            int n = 0;
            foreach (int count in _live.Values)
            {
                n += count;
            }

            return n;
        }
    }

    /// <inheritdoc/>
    public IReadOnlyList<DmaFault> Faults => _faults;

    /// <inheritdoc/>
    /// <remarks>Returns <paramref name="physical"/> itself: device addresses are physical.</remarks>
    /// <exception cref="DmaMappingException">A run lies outside the memory.</exception>
    public ScatterTable Map(ScatterTable physical, DmaDirection direction)
    {
        ArgumentNullException.ThrowIfNull(physical);
        foreach (ScatterSegment s in physical.Segments)
        {
            if (!_memory.Contains(s.Address, (long)s.Length))
            {
                throw new DmaMappingException($"{Name}: run 0x{s.Address:x} + {s.Length} bytes is not memory.");
            }
        }

        using OrderedLock.Scope scope = _lock.Enter();
        _live[physical] = _live.GetValueOrDefault(physical) + 1;
        return physical;
    }

    /// <inheritdoc/>
    public void Unmap(ScatterTable mapped, DmaDirection direction)
    {
        ArgumentNullException.ThrowIfNull(mapped);
        using OrderedLock.Scope scope = _lock.Enter();
        if (!_live.TryGetValue(mapped, out int count))
        {
            throw new ArgumentException($"{Name}: the table ({mapped}) is not a live mapping of this address space.", nameof(mapped));
        }

        if (count == 1)
        {
            _live.Remove(mapped);
        }
        else
        {
            _live[mapped] = count - 1;
        }
    }

    /// <inheritdoc/>
    public bool DmaRead(ulong deviceAddress, Span<byte> dest)
    {
        if (!_memory.Contains(deviceAddress, dest.Length))
        {
            return Fault(deviceAddress, write: false);
        }

        _memory.Read(deviceAddress, dest);
        return true;
    }

    /// <inheritdoc/>
    public bool DmaWrite(ulong deviceAddress, ReadOnlySpan<byte> src)
    {
        if (!_memory.Contains(deviceAddress, src.Length))
        {
            return Fault(deviceAddress, write: true);
        }

        _memory.Write(deviceAddress, src);
        return true;
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Name} (direct)";

    private bool Fault(ulong deviceAddress, bool write)
    {
        _stats.DmaFaults++;
        if (_faults.Count < AddressSpaceIds.MaxRecordedFaults)
        {
            _faults.Add(new DmaFault(Name, deviceAddress, write, "no memory at this address"));
        }

        return false;
    }
}

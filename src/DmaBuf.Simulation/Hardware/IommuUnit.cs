namespace DmaBuf.Simulation;

/// <summary>
/// One IOMMU (an SMMU or a VT-d unit): an IOTLB shared by its domains, tagged by each domain's ASID, a command queue
/// whose cost comes from the <see cref="CostProfile"/>, and an invalidation <see cref="Mode"/>.
/// </summary>
/// <remarks>
/// Locking: the unit's lock (<see cref="LockLevel.Iommu"/>) guards the IOTLB and the ASID space; domains take it inside
/// their own lock (<see cref="LockLevel.AddressSpace"/>), never the other way round.
/// </remarks>
public sealed class IommuUnit
{
    private readonly List<IommuDomain> _domains = [];
    private int _nextAsid;

    /// <summary>Creates the unit.</summary>
    /// <param name="name">Name, for listings and faults.</param>
    /// <param name="memory">The memory its devices reach.</param>
    /// <param name="clock">The clock mapping costs are charged to; lazy flush timers run on it.</param>
    /// <param name="profile">Costs and sizes.</param>
    /// <param name="stats">The SoC's counters.</param>
    /// <param name="mode">Strict or lazy invalidation.</param>
    public IommuUnit(string name, PhysicalMemory memory, SimClock clock, CostProfile profile, SimStats stats, IommuMode mode)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(memory);
        ArgumentNullException.ThrowIfNull(clock);
        ArgumentNullException.ThrowIfNull(profile);
        ArgumentNullException.ThrowIfNull(stats);
        Name = name;
        Memory = memory;
        Clock = clock;
        Profile = profile;
        Stats = stats;
        Mode = mode;
        Iotlb = new Iotlb((int)Math.Min(profile.IotlbEntries, 1 << 24));
        Lock = new OrderedLock(LockLevel.Iommu, $"IOMMU {name}");
    }

    /// <summary>The unit's name.</summary>
    public string Name { get; }

    /// <summary>Strict or lazy invalidation, for every domain of the unit.</summary>
    public IommuMode Mode { get; }

    /// <summary>The translation cache shared by the unit's domains.</summary>
    public Iotlb Iotlb { get; }

    /// <summary>Costs and sizes.</summary>
    public CostProfile Profile { get; }

    /// <summary>The clock costs are charged to.</summary>
    public SimClock Clock { get; }

    /// <summary>The memory the unit's devices reach.</summary>
    public PhysicalMemory Memory { get; }

    /// <summary>The SoC's counters.</summary>
    public SimStats Stats { get; }

    /// <summary>The domains created on this unit.</summary>
    public IReadOnlyList<IommuDomain> Domains => _domains;

    internal OrderedLock Lock { get; }

    /// <summary>Creates a domain with its own page table, IOVA space and ASID.</summary>
    /// <param name="name">The domain's name.</param>
    /// <param name="addressBits">Width of the device's DMA addresses (its DMA mask): IOVAs are allocated below 2^bits; 32 to 48.</param>
    /// <exception cref="InvalidOperationException">The unit has run out of ASIDs.</exception>
    public IommuDomain CreateDomain(string name, int addressBits = IoPageTable.IovaBits)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentOutOfRangeException.ThrowIfLessThan(addressBits, 32);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(addressBits, IoPageTable.IovaBits);
        int asid;
        using (Lock.Enter())
        {
            if (_nextAsid == 0xFFFF)
            {
                throw new InvalidOperationException($"IOMMU {Name} has no ASID left.");
            }

            asid = ++_nextAsid;
        }

        var domain = new IommuDomain(this, name, asid, addressBits);
        _domains.Add(domain);
        return domain;
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Name} ({Profile.Name}, {Mode})";
}

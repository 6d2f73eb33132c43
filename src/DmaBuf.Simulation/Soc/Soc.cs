namespace DmaBuf.Simulation;

/// <summary>How the SoC's devices sit behind IOMMUs.</summary>
public enum Topology
{
    /// <summary>Every device has its own IOMMU unit and domain (a typical arm64 media SoC).</summary>
    Separate,

    /// <summary>All devices sit behind one IOMMU in one group, so they share one domain.</summary>
    Shared,
}

/// <summary>How to build a <see cref="Soc"/>.</summary>
public sealed class SocOptions
{
    /// <summary>Bytes of scattered (buddy-allocated) memory.</summary>
    public long MemoryBytes { get; init; } = 512L << 20;

    /// <summary>Bytes of the contiguous (CMA-like) region.</summary>
    public long ContiguousBytes { get; init; } = 64L << 20;

    /// <summary>IOMMU topology.</summary>
    public Topology Topology { get; init; } = Topology.Separate;

    /// <summary>Invalidation mode; the profile's default when null.</summary>
    public IommuMode? Mode { get; init; }

    /// <summary>Cost profile.</summary>
    public CostProfile Profile { get; init; } = CostProfile.Load("smmuv3-strict");

    /// <summary>Seed for the page allocator's shuffle (and so for physical placement).</summary>
    public int Seed { get; init; } = 1;
}

/// <summary>
/// The simulated system-on-chip: physical memory, heaps, IOMMU units with their domains, and five DMA devices
/// (decoder, display, GPU, camera ISP, encoder) on one deterministic clock.
/// </summary>
public sealed class Soc
{
    /// <summary>Builds the reference SoC: decoder, display, GPU, ISP, encoder and JPEG engine (the last two in one IOMMU group).</summary>
    public Soc(SocOptions options)
        : this(options, SocLayout.Reference((options ?? throw new ArgumentNullException(nameof(options))).Profile))
    {
    }

    /// <summary>Builds a SoC with the devices and IOMMUs of <paramref name="layout"/> (a scenario file's).</summary>
    internal Soc(SocOptions options, SocLayout layout)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(layout);
        Topology = options.Topology;
        if (Topology == Topology.Shared)
        {
            layout = layout.Iommus.Count > 0 ? layout.AllInOneDomain(layout.Iommus[0].Profile, layout.Iommus[0].Mode) : layout;
        }

        Profile = layout.Iommus.Count > 0 ? layout.Iommus[0].Profile : options.Profile;
        Mode = options.Mode ?? (layout.Iommus.Count > 0 ? layout.Iommus[0].Mode : null) ?? Profile.DefaultMode;
        Clock = new SimClock();
        Stats = new SimStats();
        Registry = new BufferRegistry("soc");
        Memory = new PhysicalMemory(options.MemoryBytes + options.ContiguousBytes, options.ContiguousBytes, Stats, shuffleSeed: options.Seed == 0 ? 1 : options.Seed);
        CpuCache = new CpuCache(Memory);
        SystemHeap = new SystemHeap(Memory, Registry, CpuCache);
        ContiguousHeap = new ContiguousHeap(Memory, Registry, CpuCache);
        DeviceLocalHeap = new DeviceLocalHeap(Memory, Registry, CpuCache);

        // Units and domains are made as the devices that use them come up, in the layout's device order.
        var groupOf = new Dictionary<string, (IommuLayout Unit, GroupLayout Group)>(StringComparer.Ordinal);
        foreach (IommuLayout u in layout.Iommus)
        {
            foreach (GroupLayout g in u.Groups)
            {
                foreach (string d in g.Devices)
                {
                    groupOf.Add(d, (u, g));
                }
            }
        }

        var unitsByName = new Dictionary<string, IommuUnit>(StringComparer.Ordinal);
        var domainsByGroup = new Dictionary<GroupLayout, IommuDomain>();
        var units = new List<IommuUnit>();
        var domains = new List<IommuDomain>();
        var devices = new List<SimDevice>();
        foreach (DeviceLayout d in layout.Devices)
        {
            ISimAddressSpace space;
            if (groupOf.TryGetValue(d.Name, out (IommuLayout Unit, GroupLayout Group) at))
            {
                if (!domainsByGroup.TryGetValue(at.Group, out IommuDomain? domain))
                {
                    if (!unitsByName.TryGetValue(at.Unit.Name, out IommuUnit? unit))
                    {
                        unit = new IommuUnit(at.Unit.Name, Memory, Clock, at.Unit.Profile, Stats, options.Mode ?? at.Unit.Mode ?? at.Unit.Profile.DefaultMode);
                        unitsByName.Add(at.Unit.Name, unit);
                        units.Add(unit);
                    }

                    domain = unit.CreateDomain(at.Group.Name);
                    domainsByGroup.Add(at.Group, domain);
                    domains.Add(domain);
                }

                space = domain;
            }
            else
            {
                space = new DirectAddressSpace(d.Name, Memory, Stats);
            }

            devices.Add(new SimDevice(d.Name, d.Kind, space, Clock, d.BytesPerSecond, d.Coherent) { ChainFormat = d.ChainFormat });
        }

        Iommus = units;
        Domains = domains;
        Devices = devices;
    }

    /// <summary>The cost profile of the first IOMMU (of every IOMMU, unless a scenario file gives them their own).</summary>
    public CostProfile Profile { get; }

    /// <summary>Invalidation mode of the first IOMMU (of every IOMMU, unless a scenario file gives them their own).</summary>
    public IommuMode Mode { get; }

    /// <summary>IOMMU topology.</summary>
    public Topology Topology { get; }

    /// <summary>The clock.</summary>
    public SimClock Clock { get; }

    /// <summary>Counters of work done by the hardware.</summary>
    public SimStats Stats { get; }

    /// <summary>Registry of the SoC's buffers.</summary>
    public BufferRegistry Registry { get; }

    /// <summary>Physical memory.</summary>
    public PhysicalMemory Memory { get; }

    /// <summary>The CPU's cache in front of memory (devices are not coherent with it).</summary>
    public CpuCache CpuCache { get; }

    /// <summary>The system heap (scattered pages).</summary>
    public SystemHeap SystemHeap { get; }

    /// <summary>The contiguous heap.</summary>
    public ContiguousHeap ContiguousHeap { get; }

    /// <summary>The movable device-local heap.</summary>
    public DeviceLocalHeap DeviceLocalHeap { get; }

    /// <summary>IOMMU units.</summary>
    public IReadOnlyList<IommuUnit> Iommus { get; }

    /// <summary>IOMMU domains (one per device, or one shared).</summary>
    public IReadOnlyList<IommuDomain> Domains { get; }

    /// <summary>All devices.</summary>
    public IReadOnlyList<SimDevice> Devices { get; }

    /// <summary>The video decoder.</summary>
    public SimDevice Vpu => Device(DeviceKind.Decoder);

    /// <summary>The display controller.</summary>
    public SimDevice Display => Device(DeviceKind.Display);

    /// <summary>The GPU.</summary>
    public SimDevice Gpu => Device(DeviceKind.Gpu);

    /// <summary>The camera ISP.</summary>
    public SimDevice Isp => Device(DeviceKind.Isp);

    /// <summary>The video encoder.</summary>
    public SimDevice Encoder => Named("encoder");

    /// <summary>The JPEG encoder: a second codec engine in the encoder's IOMMU group, with the same chain format.</summary>
    public SimDevice Jpeg => Named("jpeg");

    /// <summary>The device called <paramref name="name"/>.</summary>
    /// <exception cref="InvalidOperationException">The SoC has no such device.</exception>
    public SimDevice Named(string name) =>
        Devices.FirstOrDefault(d => d.Name == name)
        ?? throw new InvalidOperationException($"No device '{name}' on this SoC; it has {string.Join(", ", Devices.Select(d => d.Name))}.");

    /// <summary>
    /// Fault injection for the whole SoC: sets <see cref="PhysicalMemory.FaultInjection"/> of the memory (every heap's
    /// allocations, a device-local move's new placement included) and <see cref="IommuDomain.FaultInjection"/> of every
    /// domain. Null turns it off.
    /// </summary>
    public Func<SimFaultSite, bool>? FaultInjection
    {
        get => Memory.FaultInjection;
        set
        {
            Memory.FaultInjection = value;
            foreach (IommuDomain d in Domains)
            {
                d.FaultInjection = value;
            }
        }
    }

    /// <summary>Runs every pending lazy flush now (teardown).</summary>
    public void FlushAll()
    {
        foreach (IommuDomain d in Domains)
        {
            d.FlushNow();
        }
    }

    private SimDevice Device(DeviceKind kind)
    {
        foreach (SimDevice d in Devices)
        {
            if (d.Kind == kind)
            {
                return d;
            }
        }

        throw new InvalidOperationException($"No {kind} on this SoC.");
    }
}

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
    /// <summary>Builds the SoC.</summary>
    public Soc(SocOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        Profile = options.Profile;
        Mode = options.Mode ?? Profile.DefaultMode;
        Topology = options.Topology;
        Clock = new SimClock();
        Stats = new SimStats();
        Registry = new BufferRegistry("soc");
        Memory = new PhysicalMemory(options.MemoryBytes + options.ContiguousBytes, options.ContiguousBytes, Stats, shuffleSeed: options.Seed == 0 ? 1 : options.Seed);
        CpuCache = new CpuCache(Memory);
        SystemHeap = new SystemHeap(Memory, Registry, CpuCache);
        ContiguousHeap = new ContiguousHeap(Memory, Registry, CpuCache);
        DeviceLocalHeap = new DeviceLocalHeap(Memory, Registry, CpuCache);

        // Bandwidths are round estimates of LPDDR4-class media SoCs; they only set how long a transfer takes.
        (string Name, DeviceKind Kind, long Bandwidth)[] specs =
        [
            ("vpu", DeviceKind.Decoder, 2_000_000_000),
            ("display", DeviceKind.Display, 4_000_000_000),
            ("gpu", DeviceKind.Gpu, 8_000_000_000),
            ("isp", DeviceKind.Isp, 2_000_000_000),
            ("encoder", DeviceKind.Encoder, 2_000_000_000),
            ("jpeg", DeviceKind.Encoder, 1_000_000_000),
        ];

        // The two codec engines sit in one IOMMU group (one domain) and share a DMA descriptor-chain format.
        string[] codecGroup = ["encoder", "jpeg"];
        IommuDomain? codecDomain = null;

        var units = new List<IommuUnit>();
        var domains = new List<IommuDomain>();
        var devices = new List<SimDevice>();
        IommuDomain? shared = null;
        if (Topology == Topology.Shared)
        {
            var unit = new IommuUnit("smmu0", Memory, Clock, Profile, Stats, Mode);
            shared = unit.CreateDomain("media-group");
            units.Add(unit);
            domains.Add(shared);
        }

        foreach ((string name, DeviceKind kind, long bandwidth) in specs)
        {
            IommuDomain domain;
            if (shared is not null)
            {
                domain = shared;
            }
            else if (codecGroup.Contains(name) && codecDomain is not null)
            {
                domain = codecDomain;
            }
            else if (codecGroup.Contains(name))
            {
                var unit = new IommuUnit("vcodec-smmu", Memory, Clock, Profile, Stats, Mode);
                codecDomain = domain = unit.CreateDomain("vcodec");
                units.Add(unit);
                domains.Add(domain);
            }
            else
            {
                var unit = new IommuUnit($"{name}-smmu", Memory, Clock, Profile, Stats, Mode);
                domain = unit.CreateDomain(name);
                units.Add(unit);
                domains.Add(domain);
            }

            devices.Add(new SimDevice(name, kind, domain, Clock, bandwidth)
            {
                ChainFormat = codecGroup.Contains(name) ? DescriptorChainFormat.VcodecDma : null,
            });
        }

        Iommus = units;
        Domains = domains;
        Devices = devices;
    }

    /// <summary>The cost profile.</summary>
    public CostProfile Profile { get; }

    /// <summary>Invalidation mode of every IOMMU.</summary>
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
    public SimDevice Encoder => Devices.First(d => d.Name == "encoder");

    /// <summary>The JPEG encoder: a second codec engine in the encoder's IOMMU group, with the same chain format.</summary>
    public SimDevice Jpeg => Devices.First(d => d.Name == "jpeg");

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

namespace DmaBuf.Simulation;

/// <summary>
/// Counters of the work the simulated hardware did. One instance per simulated SoC, shared by its memory, IOMMUs and
/// devices; the hardware increments the fields directly, so reading them is free and they can be snapshotted with
/// <see cref="Clone"/>. Not thread-safe: the simulation is single-threaded.
/// </summary>
#pragma warning disable CA1051 // plain counters on purpose: the hot path increments them without a call
public sealed class SimStats
{
    /// <summary>Mappings created in an IOMMU domain (one per scatter table mapped).</summary>
    public long MapCalls;

    /// <summary>Mappings torn down in an IOMMU domain.</summary>
    public long UnmapCalls;

    /// <summary>Page-table leaf entries written: a 4 KiB page or a 2 MiB block counts 1.</summary>
    public long PagesMapped;

    /// <summary>Page-table leaf entries cleared.</summary>
    public long PagesUnmapped;

    /// <summary>IOTLB invalidation commands issued: per page, per range or per whole domain, as the profile's hardware does.</summary>
    public long IotlbInvalidations;

    /// <summary>Device translations answered by the IOTLB.</summary>
    public long IotlbHits;

    /// <summary>Device translations the IOTLB could not answer.</summary>
    public long IotlbMisses;

    /// <summary>Page-table walks done by the IOMMU after an IOTLB miss.</summary>
    public long PageWalks;

    /// <summary>IOVA ranges allocated, cache hits included.</summary>
    public long IovaAllocs;

    /// <summary>IOVA ranges served from the per-size IOVA cache.</summary>
    public long IovaCacheHits;

    /// <summary>IOVA ranges freed.</summary>
    public long IovaFrees;

    /// <summary>Lazy-mode flushes of a domain's flush queue.</summary>
    public long LazyFlushes;

    /// <summary>DMA translation faults: an access to an unmapped device address or against a mapping's permissions.</summary>
    public long DmaFaults;

    /// <summary>Pages of freed (allocator-owned) memory touched by a checked access: each one is a use-after-free.</summary>
    public long FreedPageAccesses;

    /// <summary>Pages touched by a checked access while freed by their owner but held back because a device could still reach them.</summary>
    public long FreePendingAccesses;

    /// <summary>Simulated nanoseconds spent mapping, unmapping, invalidating and allocating or freeing IOVA.</summary>
    public long MappingNs;

    /// <summary>Simulated nanoseconds the IOMMU spent walking page tables for devices (not part of <see cref="MappingNs"/>).</summary>
    public long TranslationNs;

    /// <summary>Returns a copy of the counters as they are now.</summary>
    public SimStats Clone() => (SimStats)MemberwiseClone();

    /// <summary>Sets every counter to zero.</summary>
    public void Reset()
    {
        MapCalls = 0;
        UnmapCalls = 0;
        PagesMapped = 0;
        PagesUnmapped = 0;
        IotlbInvalidations = 0;
        IotlbHits = 0;
        IotlbMisses = 0;
        PageWalks = 0;
        IovaAllocs = 0;
        IovaCacheHits = 0;
        IovaFrees = 0;
        LazyFlushes = 0;
        DmaFaults = 0;
        FreedPageAccesses = 0;
        FreePendingAccesses = 0;
        MappingNs = 0;
        TranslationNs = 0;
    }
}
#pragma warning restore CA1051

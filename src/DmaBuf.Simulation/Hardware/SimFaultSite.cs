namespace DmaBuf.Simulation;

/// <summary>
/// A place where the simulated hardware can be made to fail on purpose, for fault-injection tests: see
/// <see cref="PhysicalMemory.FaultInjection"/> and <see cref="IommuDomain.FaultInjection"/>.
/// </summary>
public enum SimFaultSite
{
    /// <summary>A buddy block allocation (<see cref="PhysicalMemory.TryAllocate"/>) finds no memory.</summary>
    PageAllocation,

    /// <summary>A contiguous-run allocation (<see cref="PhysicalMemory.TryAllocateContiguous"/>) finds no memory.</summary>
    ContiguousAllocation,

    /// <summary>An IOMMU domain finds no IOVA range for a map.</summary>
    IovaAllocation,

    /// <summary>
    /// An IOMMU page-table write fails (the page-table page it needs cannot be allocated). Asked before each leaf block
    /// and each run of page entries a map writes, so a map can fail after writing some of its entries.
    /// </summary>
    PageTableWrite,
}

namespace DmaBuf.Simulation;

/// <summary>When an IOMMU invalidates its IOTLB after an unmap (Linux <c>iommu.strict</c>).</summary>
public enum IommuMode
{
    /// <summary>Every unmap invalidates before it returns; IOVA and memory are released at once.</summary>
    Strict,

    /// <summary>
    /// Unmap clears page-table entries and queues the range; a later flush invalidates the whole domain and only then
    /// releases the IOVA and the memory (design rule 8: memory is never given back while a device can still reach it).
    /// </summary>
    Lazy,

    /// <summary>
    /// Lazy as Linux does it: the flush queue defers the IOTLB invalidation and the IOVA's reuse, but the data pages go
    /// back at unmap, so until the flush a device with a stale IOTLB entry can reach memory that is already freed or
    /// reused (Markuze et al., ASPLOS'16). Breaks design rule 8 on purpose, to measure the window.
    /// </summary>
    LinuxLazy,
}

namespace DmaBuf.Simulation;

/// <summary>When an IOMMU invalidates its IOTLB after an unmap (Linux <c>iommu.strict</c>).</summary>
public enum IommuMode
{
    /// <summary>Every unmap invalidates before it returns; IOVA and memory are released at once.</summary>
    Strict,

    /// <summary>
    /// Unmap clears page-table entries and queues the range; a later flush invalidates the whole domain and only then
    /// releases the IOVA and the memory (Linux's flush queue).
    /// </summary>
    Lazy,
}

namespace DmaBuf.Simulation;

/// <summary>
/// A simulated device address space: besides mapping, it carries a device's DMA, translating page by page and then
/// accessing <see cref="PhysicalMemory"/> with its checks.
/// </summary>
public interface ISimAddressSpace : IDmaAddressSpace
{
    /// <summary>
    /// A device reads <paramref name="dest"/>.Length bytes from <paramref name="deviceAddress"/>. On a translation fault
    /// the fault is recorded in <see cref="Faults"/> and counted in <see cref="SimStats.DmaFaults"/>, the transfer stops
    /// (bytes before the faulting page have been read) and the method returns false.
    /// </summary>
    bool DmaRead(ulong deviceAddress, Span<byte> dest);

    /// <summary>A device writes <paramref name="src"/> at <paramref name="deviceAddress"/>; faults as <see cref="DmaRead"/>.</summary>
    bool DmaWrite(ulong deviceAddress, ReadOnlySpan<byte> src);

    /// <summary>The faults recorded so far, oldest first (at most <see cref="AddressSpaceIds.MaxRecordedFaults"/>; all are counted in the stats).</summary>
    IReadOnlyList<DmaFault> Faults { get; }
}

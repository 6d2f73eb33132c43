namespace DmaBuf.Simulation;

/// <summary>A DMA translation fault recorded by a simulated address space.</summary>
/// <param name="AddressSpace">Name of the address space that faulted.</param>
/// <param name="DeviceAddress">The device address that could not be translated.</param>
/// <param name="Write">Whether the access was a write.</param>
/// <param name="Reason">Why: unmapped, or against the mapping's permissions.</param>
public sealed record DmaFault(string AddressSpace, ulong DeviceAddress, bool Write, string Reason);

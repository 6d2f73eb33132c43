namespace DmaBuf;

/// <summary>
/// A device address space: an IOMMU domain, or direct access to physical addresses when no IOMMU sits in front of the
/// device. The framework asks the address space to map and unmap and never computes device addresses itself.
/// </summary>
/// <remarks>
/// Implementations take their own lock (<see cref="LockLevel.AddressSpace"/>, then <see cref="LockLevel.Iommu"/>) inside
/// <see cref="Map"/> and <see cref="Unmap"/>; callers may hold a buffer lock, never a lock of a higher level.
/// </remarks>
public interface IDmaAddressSpace
{
    /// <summary>Identity of the address space, unique for the life of the process; keys the domain-shared caches.</summary>
    long Id { get; }

    /// <summary>Human-readable name, for listings.</summary>
    string Name { get; }

    /// <summary>
    /// Maps the physical runs of <paramref name="physical"/> and returns the device addresses that reach them, in the
    /// same buffer order. Called by exporters from <see cref="IDmaBufExporter.Map"/> with the buffer lock held.
    /// </summary>
    /// <exception cref="DmaMappingException">The address space has no room, or the runs cannot be mapped.</exception>
    ScatterTable Map(ScatterTable physical, DmaDirection direction);

    /// <summary>
    /// Tears down a mapping returned by <see cref="Map"/>. After it returns the device can no longer reach the memory,
    /// or (lazy invalidation) the memory is held back until it cannot.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="mapped"/> is not a live mapping of this address space.</exception>
    void Unmap(ScatterTable mapped, DmaDirection direction);
}

/// <summary>A device that does DMA: it reaches memory through its <see cref="AddressSpace"/>.</summary>
public interface IDmaDevice
{
    /// <summary>Device name, as in <c>dev_name()</c>.</summary>
    string Name { get; }

    /// <summary>The address space the device's DMA goes through. Devices of one IOMMU group share one.</summary>
    IDmaAddressSpace AddressSpace { get; }

    /// <summary>Whether the device snoops CPU caches. A non-coherent device needs CPU access brackets.</summary>
    bool IsCoherent { get; }
}

/// <summary>A mapping request failed: no device address space left, or the memory cannot be reached.</summary>
public sealed class DmaMappingException : Exception
{
    /// <summary>Creates the exception with a message.</summary>
    public DmaMappingException(string message) : base(message) { }

    /// <summary>Creates the exception with a message and inner exception.</summary>
    public DmaMappingException(string message, Exception inner) : base(message, inner) { }

    /// <summary>Creates the exception with no message.</summary>
    public DmaMappingException() { }
}

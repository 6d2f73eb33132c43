namespace DmaBuf.Simulation;

/// <summary>
/// A DMA descriptor-chain format: how a device's DMA engine wants a buffer described (a list of address/length
/// descriptors, each at most <see cref="MaxBytesPerDescriptor"/>). Devices with the same format can share one chain per
/// buffer — the second example of the 2014 patch — if they also share the device addresses it lists.
/// </summary>
/// <param name="Name">Format name.</param>
/// <param name="MaxBytesPerDescriptor">Largest transfer one descriptor describes.</param>
/// <param name="BuildFixedNs">Simulated cost of building a chain (allocation, header), an estimate.</param>
/// <param name="BuildPerDescriptorNs">Simulated cost per descriptor written, an estimate.</param>
public sealed record DescriptorChainFormat(string Name, int MaxBytesPerDescriptor, long BuildFixedNs, long BuildPerDescriptorNs)
{
    /// <summary>The video codec block's format: 64 KiB descriptors.</summary>
    public static DescriptorChainFormat VcodecDma { get; } = new("vcodec-dma", 64 * 1024, BuildFixedNs: 800, BuildPerDescriptorNs: 25);
}

/// <summary>One descriptor: a device address and a length.</summary>
/// <param name="DeviceAddress">Where the DMA engine reads or writes.</param>
/// <param name="Length">Bytes.</param>
public readonly record struct Descriptor(ulong DeviceAddress, int Length);

/// <summary>A built descriptor chain for one buffer in one address space. Immutable.</summary>
public sealed class DescriptorChain
{
    private readonly Descriptor[] _descriptors;

    private DescriptorChain(DescriptorChainFormat format, long addressSpaceId, Descriptor[] descriptors, long bytes)
    {
        Format = format;
        AddressSpaceId = addressSpaceId;
        _descriptors = descriptors;
        Bytes = bytes;
    }

    /// <summary>The chain's format.</summary>
    public DescriptorChainFormat Format { get; }

    /// <summary>The address space whose device addresses the chain lists.</summary>
    public long AddressSpaceId { get; }

    /// <summary>The descriptors in transfer order.</summary>
    public ReadOnlySpan<Descriptor> Descriptors => _descriptors;

    /// <summary>Bytes the chain covers.</summary>
    public long Bytes { get; }

    /// <summary>Builds the chain for <paramref name="mapping"/> (device addresses in <paramref name="addressSpaceId"/>).</summary>
    public static DescriptorChain Build(DescriptorChainFormat format, long addressSpaceId, ScatterTable mapping)
    {
        ArgumentNullException.ThrowIfNull(format);
        ArgumentNullException.ThrowIfNull(mapping);
        var list = new List<Descriptor>();
        foreach (ScatterSegment s in mapping.Segments)
        {
            for (ulong off = 0; off < s.Length; off += (ulong)format.MaxBytesPerDescriptor)
            {
                list.Add(new Descriptor(s.Address + off, (int)Math.Min((ulong)format.MaxBytesPerDescriptor, s.Length - off)));
            }
        }

        return new DescriptorChain(format, addressSpaceId, [.. list], (long)mapping.TotalLength);
    }

    /// <summary>Simulated time it took to build this chain.</summary>
    public long BuildNs => Format.BuildFixedNs + (Format.BuildPerDescriptorNs * _descriptors.Length);
}

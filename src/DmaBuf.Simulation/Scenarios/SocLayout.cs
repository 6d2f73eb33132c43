namespace DmaBuf.Simulation;

/// <summary>What a device's DMA engine may do with a buffer.</summary>
internal enum DmaAccess
{
    Read,
    Write,
    ReadWrite,
}

/// <summary>One DMA device of a layout.</summary>
internal sealed record DeviceLayout(string Name, DeviceKind Kind, DmaAccess Access, long BytesPerSecond, bool Coherent, DescriptorChainFormat? ChainFormat);

/// <summary>An IOMMU group: devices that share one domain.</summary>
internal sealed record GroupLayout(string Name, IReadOnlyList<string> Devices);

/// <summary>An IOMMU unit with its cost profile, its mode (the profile's default when null) and its groups.</summary>
internal sealed record IommuLayout(string Name, CostProfile Profile, IommuMode? Mode, IReadOnlyList<GroupLayout> Groups);

/// <summary>
/// Which devices a SoC has and how they sit behind IOMMUs. A device in no group has no IOMMU: its DMA uses physical
/// addresses. Built from a scenario file, or <see cref="Reference"/>.
/// </summary>
internal sealed record SocLayout(IReadOnlyList<DeviceLayout> Devices, IReadOnlyList<IommuLayout> Iommus)
{
    /// <summary>
    /// The reference media SoC: decoder, display, GPU, ISP and two codec engines (encoder and JPEG) that sit in one
    /// IOMMU group and share a descriptor-chain format; every other device has an IOMMU unit of its own. Bandwidths are
    /// round estimates of LPDDR4-class media SoCs; they only set how long a transfer takes.
    /// </summary>
    public static SocLayout Reference(CostProfile profile) => new(
        [
            new("vpu", DeviceKind.Decoder, DmaAccess.Write, 2_000_000_000, false, null),
            new("display", DeviceKind.Display, DmaAccess.Read, 4_000_000_000, false, null),
            new("gpu", DeviceKind.Gpu, DmaAccess.ReadWrite, 8_000_000_000, false, null),
            new("isp", DeviceKind.Isp, DmaAccess.Write, 2_000_000_000, false, null),
            new("encoder", DeviceKind.Encoder, DmaAccess.Read, 2_000_000_000, false, DescriptorChainFormat.VcodecDma),
            new("jpeg", DeviceKind.Encoder, DmaAccess.Read, 1_000_000_000, false, DescriptorChainFormat.VcodecDma),
        ],
        [
            new("vpu-smmu", profile, null, [new("vpu", ["vpu"])]),
            new("display-smmu", profile, null, [new("display", ["display"])]),
            new("gpu-smmu", profile, null, [new("gpu", ["gpu"])]),
            new("isp-smmu", profile, null, [new("isp", ["isp"])]),
            new("vcodec-smmu", profile, null, [new("vcodec", ["encoder", "jpeg"])]),
        ]);

    /// <summary>
    /// The same devices with every one that has an IOMMU behind one unit, in one group (one domain), with
    /// <paramref name="profile"/> (<see cref="Topology.Shared"/>). Devices without an IOMMU stay without.
    /// </summary>
    public SocLayout AllInOneDomain(CostProfile profile, IommuMode? mode)
    {
        var behindIommu = new HashSet<string>(Iommus.SelectMany(u => u.Groups).SelectMany(g => g.Devices), StringComparer.Ordinal);
        string[] members = [.. Devices.Where(d => behindIommu.Contains(d.Name)).Select(d => d.Name)];
        return this with { Iommus = members.Length == 0 ? [] : [new IommuLayout("smmu0", profile, mode, [new GroupLayout("media-group", members)])] };
    }

    /// <summary>Every unit with <paramref name="profile"/> instead of its own, when it is not null.</summary>
    public SocLayout WithProfile(CostProfile? profile) =>
        profile is null ? this : this with { Iommus = [.. Iommus.Select(u => u with { Profile = profile })] };
}

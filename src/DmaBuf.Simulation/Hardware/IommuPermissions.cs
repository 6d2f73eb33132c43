namespace DmaBuf.Simulation;

/// <summary>What a device may do through an IOMMU mapping.</summary>
[Flags]
public enum IommuPermissions : byte
{
    /// <summary>Nothing.</summary>
    None = 0,

    /// <summary>The device may read.</summary>
    Read = 1,

    /// <summary>The device may write.</summary>
    Write = 2,

    /// <summary>The device may read and write.</summary>
    ReadWrite = Read | Write,
}

namespace DmaBuf;

/// <summary>Why a metadata entry or cached mapping was released. Its release callback runs exactly once, for the first of these.</summary>
public enum MetadataReleaseReason
{
    /// <summary>The buffer's last reference went.</summary>
    BufferReleased,

    /// <summary>The entry's owner (device, driver context, address space) was torn down.</summary>
    OwnerTeardown,

    /// <summary>Someone removed it explicitly.</summary>
    Removed,

    /// <summary>The buffer moved, and the entry depended on where it was.</summary>
    Invalidated,

    /// <summary>A bounded cache dropped it to stay within its budget.</summary>
    Evicted,
}

/// <summary>
/// A typed key for per-buffer metadata. Keys are compared by reference: two keys with the same name are different keys,
/// so two drivers cannot collide by accident.
/// </summary>
/// <typeparam name="T">Type of the value stored under the key.</typeparam>
public sealed class MetadataKey<T>
    where T : class
{
    /// <summary>Creates a key.</summary>
    /// <param name="name">Name, for listings and errors.</param>
    /// <param name="dependsOnPlacement">Whether values under this key describe where the buffer is (device addresses,
    /// descriptor chains) and must be invalidated when the buffer moves.</param>
    public MetadataKey(string name, bool dependsOnPlacement = true)
    {
        Name = name;
        DependsOnPlacement = dependsOnPlacement;
    }

    /// <summary>Key name.</summary>
    public string Name { get; }

    /// <summary>Whether values under the key are invalidated when the buffer moves.</summary>
    public bool DependsOnPlacement { get; }

    /// <inheritdoc/>
    public override string ToString() => Name;
}

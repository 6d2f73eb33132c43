namespace DmaBuf;

/// <summary>
/// The exporter's side of a buffer (<c>struct dma_buf_ops</c>): the code that owns the memory behind a
/// <see cref="DmaBuffer"/> and knows how to make it reachable by devices and by the CPU.
/// </summary>
/// <remarks>
/// <para><b>Callers.</b> Only the framework calls these members, on behalf of importers (<see cref="DmaBufAttachment"/>)
/// and of holders of a <see cref="DmaBufHandle"/>. An exporter never calls them on itself.</para>
/// <para><b>Locks.</b> <see cref="Attach"/>, <see cref="Detach"/>, <see cref="Map"/>, <see cref="Unmap"/>,
/// <see cref="Pin"/> and <see cref="Unpin"/> run with the buffer's lock (<see cref="LockLevel.Buffer"/>) held: an exporter
/// may take address-space and IOMMU locks below it, never a registry lock or another buffer's lock.
/// <see cref="Release"/>, <see cref="BeginCpuAccess"/>, <see cref="EndCpuAccess"/> and <see cref="Vmap"/> run with no
/// framework lock held.</para>
/// <para><b>Optional members</b> have default implementations: <see cref="Attach"/>, <see cref="Detach"/>, the CPU access
/// pair and <see cref="Pin"/>/<see cref="Unpin"/> do nothing; <see cref="Vmap"/> throws <see cref="NotSupportedException"/>.
/// <see cref="Map"/>, <see cref="Unmap"/> and <see cref="Release"/> are mandatory.</para>
/// <para><b>Ownership.</b> Once <see cref="DmaBuffer.Export"/> succeeds the buffer owns the exporter's backing store:
/// <see cref="Release"/> is called exactly once, after every attachment is gone and every cached mapping and metadata
/// entry has been released, and is the only place the backing store may be freed (design rule 7).</para>
/// </remarks>
public interface IDmaBufExporter
{
    /// <summary>Exporter name shown in listings (<c>exp_name</c>), e.g. <c>system</c>.</summary>
    string Name { get; }

    /// <summary>
    /// Optional. Called when a device attaches, before the attachment is visible to anyone. May set
    /// <see cref="DmaBufAttachment.ExporterPrivate"/> or refuse the device. Buffer lock held.
    /// </summary>
    /// <exception cref="NotSupportedException">The exporter cannot serve this device; the attach fails, nothing leaks.</exception>
    void Attach(DmaBufAttachment attachment)
    {
    }

    /// <summary>Optional. Called when an attachment goes, after its last mapping was unmapped. Buffer lock held. Must not throw.</summary>
    void Detach(DmaBufAttachment attachment)
    {
    }

    /// <summary>
    /// Mandatory. Makes the buffer reachable by the attachment's device and returns the device addresses, by asking the
    /// device's <see cref="IDmaDevice.AddressSpace"/> to map the exporter's physical runs. Buffer lock held.
    /// </summary>
    /// <exception cref="DmaMappingException">The device's address space could not map the buffer.</exception>
    ScatterTable Map(DmaBufAttachment attachment, DmaDirection direction);

    /// <summary>
    /// Mandatory. Undoes one <see cref="Map"/> of the same attachment; <paramref name="table"/> is the table it
    /// returned. Buffer lock held. Must not throw for a table it returned.
    /// </summary>
    void Unmap(DmaBufAttachment attachment, ScatterTable table, DmaDirection direction);

    /// <summary>
    /// Mandatory. Frees the backing store. Called exactly once, when the last reference to the buffer goes, with no
    /// framework lock held. Must not throw.
    /// </summary>
    void Release(DmaBuffer buffer);

    /// <summary>
    /// Optional. Prepares the buffer for CPU access in <paramref name="access"/> direction (cache invalidation for
    /// reads on non-coherent systems). No framework lock held.
    /// </summary>
    void BeginCpuAccess(DmaBuffer buffer, CpuAccess access)
    {
    }

    /// <summary>
    /// Optional. Ends CPU access (cache write-back for writes on non-coherent systems). No framework lock held.
    /// </summary>
    void EndCpuAccess(DmaBuffer buffer, CpuAccess access)
    {
    }

    /// <summary>
    /// Optional. Returns a CPU view of the whole buffer. No framework lock held. The view must be disposed before the
    /// buffer's last reference goes.
    /// </summary>
    /// <exception cref="NotSupportedException">The exporter has no CPU view (the default).</exception>
    IDmaBufCpuView Vmap(DmaBuffer buffer) =>
        throw new NotSupportedException($"Exporter '{Name}' does not support CPU mappings (vmap).");

    /// <summary>
    /// Optional (dynamic exporters). Pins the buffer in place for this attachment so it cannot move while mapped.
    /// Buffer lock held.
    /// </summary>
    void Pin(DmaBufAttachment attachment)
    {
    }

    /// <summary>Optional (dynamic exporters). Undoes <see cref="Pin"/>. Buffer lock held. Must not throw.</summary>
    void Unpin(DmaBufAttachment attachment)
    {
    }
}

/// <summary>A CPU view of a buffer's bytes, from <see cref="IDmaBufExporter.Vmap"/>.</summary>
public interface IDmaBufCpuView : IDisposable
{
    /// <summary>Length of the view in bytes (the buffer's size).</summary>
    long Length { get; }

    /// <summary>Copies bytes out of the buffer starting at <paramref name="offset"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is outside the buffer.</exception>
    void Read(long offset, Span<byte> destination);

    /// <summary>Copies bytes into the buffer starting at <paramref name="offset"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is outside the buffer.</exception>
    void Write(long offset, ReadOnlySpan<byte> source);
}

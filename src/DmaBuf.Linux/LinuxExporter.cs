// Ownership: Allocate hands the caller the first reference to a new buffer; from then on the buffer owns its
// descriptor (rule 7) and the exporter's Release closes it. Until DmaBuffer.Export succeeds the exporter owns the
// descriptor and closes it on any failure. An exporter that opened a device node owns that descriptor and closes it on
// Dispose; buffers already allocated do not need it and stay valid.
using System.Diagnostics;

namespace DmaBuf.Linux;

/// <summary>
/// The common operations of buffers backed by a Linux descriptor (memfd or dma-buf): CPU access through the
/// <see cref="MmapCache"/>, sync ioctls for dma-bufs, and device mappings for CPU-side devices.
/// </summary>
/// <remarks>
/// <para><b>Devices.</b> Only devices of a <see cref="CpuAddressSpace"/> can attach: user space cannot program a real
/// device's IOMMU. <c>Map</c> leases the buffer's mapping from the mmap cache and returns its address range (one run: the
/// mapping is virtually contiguous) as the device's view; the lease keeps the memory mapped until <c>Unmap</c>, even if
/// the cache evicts the mapping meanwhile.</para>
/// <para><b>CPU access.</b> On a dma-buf, <c>BeginCpuAccess</c>/<c>EndCpuAccess</c> issue <c>DMA_BUF_IOCTL_SYNC</c>
/// start/end with the access direction; a memfd is ordinary coherent shmem and needs nothing.</para>
/// <para><b>Release</b> drops the cached mapping (unmapped once its last lease goes), then closes the descriptor.</para>
/// </remarks>
public abstract class LinuxExporter : IDmaBufExporter
{
    private protected LinuxExporter(MmapCache? cache, BufferRegistry? registry)
    {
        Cache = cache ?? MmapCache.Shared;
        Registry = registry;
    }

    /// <inheritdoc/>
    public abstract string Name { get; }

    /// <summary>The mmap cache buffers of this exporter map through.</summary>
    public MmapCache Cache { get; }

    /// <summary>The registry new buffers are listed in; <see cref="BufferRegistry.Default"/> when null.</summary>
    public BufferRegistry? Registry { get; }

    /// <summary>Allocates a buffer of <paramref name="size"/> bytes and returns its first reference.</summary>
    /// <param name="size">Size in bytes; positive.</param>
    /// <param name="name">Debug name (at most <see cref="DmaBuffer.MaxNameLength"/> UTF-8 bytes).</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is not positive.</exception>
    /// <exception cref="ArgumentException"><paramref name="name"/> is invalid.</exception>
    /// <exception cref="LinuxErrorException">The kernel refused (out of memory, too many open files).</exception>
    /// <exception cref="ObjectDisposedException">The exporter was disposed.</exception>
    public abstract DmaBufHandle Allocate(long size, string? name = null);

    /// <summary>
    /// Wraps <paramref name="fd"/> in a new buffer. Takes ownership of the descriptor: on failure it is closed, on
    /// success the buffer owns it.
    /// </summary>
    private protected DmaBufHandle Export(SafeFdHandle fd, LinuxBufferKind kind, long size, string? name)
    {
        DmaBufHandle handle;
        LinuxBuffer buffer;
        try
        {
            Interop.Libc.FileStatus st = Interop.Libc.FStat(fd);
            buffer = new LinuxBuffer(fd, new FileIdentity(st.Device, st.Inode), kind, size, st.Size, Cache, PopulateMappings);
            handle = DmaBuffer.Export(new DmaBufExportInfo
            {
                Exporter = this,
                Size = size,
                ExporterPrivate = buffer,
                Name = name,
                Registry = Registry,
            });
        }
        catch
        {
            fd.Dispose(); // not exported: the descriptor is still ours
            throw;
        }

        try
        {
            OnExported(handle.Buffer, buffer);
            return handle;
        }
        catch
        {
            handle.Dispose(); // exported (rule 7): only the reference goes; the release closes the descriptor, once
            throw;
        }
    }

    /// <summary>
    /// Wraps a real dma-buf <paramref name="fd"/>, naming it in the kernel first (<c>DMA_BUF_SET_NAME</c>, so the name
    /// shows in fdinfo). Takes ownership of the descriptor as <see cref="Export"/> does.
    /// </summary>
    private protected DmaBufHandle ExportDmaBuf(SafeFdHandle fd, long size, string? name)
    {
        if (name is not null)
        {
            try
            {
                LinuxDmaBuf.SetKernelName(fd, name);
            }
            catch
            {
                fd.Dispose();
                throw;
            }
        }

        return Export(fd, LinuxBufferKind.DmaBuf, size, name);
    }

    /// <summary>Whether CPU mappings of this exporter's buffers are pre-faulted; false for buffers that came from a peer.</summary>
    private protected virtual bool PopulateMappings => true;

    /// <summary>Called after a buffer of this exporter was exported. Must not throw.</summary>
    private protected virtual void OnExported(DmaBuffer buffer, LinuxBuffer linux)
    {
    }

    /// <summary>Called from release after the mapping is gone and before the descriptor closes. Must not throw.</summary>
    private protected virtual void OnReleased(DmaBuffer buffer, LinuxBuffer linux)
    {
    }

    void IDmaBufExporter.Attach(DmaBufAttachment attachment)
    {
        if (attachment.Device.AddressSpace is not CpuAddressSpace)
        {
            throw new NotSupportedException(
                $"{Name} buffers can only be mapped by CPU-side devices (a '{CpuAddressSpace.Process.Name}' address space); " +
                $"device '{attachment.Device.Name}' is behind '{attachment.Device.AddressSpace.Name}'.");
        }

        attachment.ExporterPrivate = new Dictionary<ScatterTable, CpuMapping>(ReferenceEqualityComparer.Instance);
    }

    ScatterTable IDmaBufExporter.Map(DmaBufAttachment attachment, DmaDirection direction)
    {
        LinuxBuffer linux = LinuxDmaBuf.GetLinuxBuffer(attachment.Buffer);
        CpuMapping? lease = null;
        try
        {
            lease = linux.Cache.Acquire(linux, reference: null);
            ScatterTable region = ScatterTable.Single((ulong)lease.Address, (ulong)linux.Size);
            ScatterTable mapped = attachment.Device.AddressSpace.Map(region, direction);
            Leases(attachment).Add(mapped, lease);
            return mapped;
        }
        catch (Exception e)
        {
            lease?.Dispose();
            if (e is DmaMappingException)
            {
                throw;
            }

            throw new DmaMappingException($"Mapping {attachment.Buffer} for {attachment.Device.Name} failed: {e.Message}", e);
        }
    }

    void IDmaBufExporter.Unmap(DmaBufAttachment attachment, ScatterTable table, DmaDirection direction)
    {
        bool found = Leases(attachment).Remove(table, out CpuMapping? lease);
        Debug.Assert(found, "unmap of a table this exporter did not map");
        attachment.Device.AddressSpace.Unmap(table, direction);
        lease?.Dispose();
    }

    void IDmaBufExporter.Release(DmaBuffer buffer)
    {
        var linux = (LinuxBuffer)buffer.ExporterPrivate!;
        try
        {
            linux.Cache.Forget(linux.Identity);
            OnReleased(buffer, linux);
        }
        finally
        {
            linux.Fd.Dispose();
        }
    }

    void IDmaBufExporter.BeginCpuAccess(DmaBuffer buffer, CpuAccess access) => Sync(buffer, access, Interop.Libc.DMA_BUF_SYNC_START);

    void IDmaBufExporter.EndCpuAccess(DmaBuffer buffer, CpuAccess access) => Sync(buffer, access, Interop.Libc.DMA_BUF_SYNC_END);

    IDmaBufCpuView IDmaBufExporter.Vmap(DmaBuffer buffer)
    {
        LinuxBuffer linux = LinuxDmaBuf.GetLinuxBuffer(buffer);
        return linux.Cache.Acquire(linux, reference: null);
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Name} exporter";

    private static Dictionary<ScatterTable, CpuMapping> Leases(DmaBufAttachment attachment) =>
        (Dictionary<ScatterTable, CpuMapping>)attachment.ExporterPrivate!;

    private static void Sync(DmaBuffer buffer, CpuAccess access, ulong phase)
    {
        LinuxBuffer linux = LinuxDmaBuf.GetLinuxBuffer(buffer);
        if (linux.Kind != LinuxBufferKind.DmaBuf)
        {
            return; // memfd: coherent shmem, nothing to flush or invalidate
        }

        Interop.Libc.DmaBufSync(linux.Fd, phase | access switch
        {
            CpuAccess.Read => Interop.Libc.DMA_BUF_SYNC_READ,
            CpuAccess.Write => Interop.Libc.DMA_BUF_SYNC_WRITE,
            _ => Interop.Libc.DMA_BUF_SYNC_RW, // DmaBufHandle validated the flags: ReadWrite
        });
    }
}

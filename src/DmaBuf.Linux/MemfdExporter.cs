namespace DmaBuf.Linux;

/// <summary>
/// Buffers in sealed memfds: <c>memfd_create(MFD_CLOEXEC | MFD_ALLOW_SEALING)</c>, sized with <c>ftruncate</c>, then
/// sealed with <c>F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL</c> so no process can ever change the size under a
/// mapping (a shrink would SIGBUS every process that has it mapped).
/// </summary>
/// <remarks>Available wherever the kernel has memfd (CONFIG_MEMFD_CREATE, every mainstream kernel since 3.17).</remarks>
public sealed class MemfdExporter : LinuxExporter
{
    /// <summary>The seals every memfd buffer carries.</summary>
    internal const int Seals = Interop.Libc.F_SEAL_SHRINK | Interop.Libc.F_SEAL_GROW | Interop.Libc.F_SEAL_SEAL;

    /// <summary>Creates the exporter.</summary>
    /// <param name="cache">The mmap cache to map through; <see cref="MmapCache.Shared"/> when null.</param>
    /// <param name="registry">The registry to list buffers in; <see cref="BufferRegistry.Default"/> when null.</param>
    public MemfdExporter(MmapCache? cache = null, BufferRegistry? registry = null)
        : base(cache, registry)
    {
    }

    /// <inheritdoc/>
    public override string Name => "memfd";

    /// <inheritdoc/>
    public override DmaBufHandle Allocate(long size, string? name = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(size);
        DmaBuffer.ValidateName(name);
        SafeFdHandle fd = Interop.Libc.CreateMemfd(name ?? "dmabuf", size);
        try
        {
            Interop.Libc.AddSeals(fd, Seals);
        }
        catch
        {
            fd.Dispose();
            throw;
        }

        return Export(fd, LinuxBufferKind.Memfd, size, name);
    }
}

namespace DmaBuf.Linux;

/// <summary>
/// Buffers made by udmabuf (<c>/dev/udmabuf</c>, <c>UDMABUF_CREATE</c>): a sealed memfd turned into a real dma-buf.
/// The memfd is sized to whole pages and sealed against shrinking (udmabuf refuses it otherwise); once the dma-buf
/// exists the memfd descriptor is closed, the dma-buf keeps the pages.
/// </summary>
public sealed class UdmabufExporter : LinuxExporter, IDisposable
{
    private readonly SafeFdHandle _device;

    /// <summary>Opens <c>/dev/udmabuf</c>.</summary>
    /// <param name="cache">The mmap cache to map through; <see cref="MmapCache.Shared"/> when null.</param>
    /// <param name="registry">The registry to list buffers in; <see cref="BufferRegistry.Default"/> when null.</param>
    /// <param name="features">What the machine has; probed when null.</param>
    /// <exception cref="FeatureNotAvailableException">The node does not exist.</exception>
    /// <exception cref="LinuxErrorException">The node exists but cannot be opened (permissions).</exception>
    public UdmabufExporter(MmapCache? cache = null, BufferRegistry? registry = null, LinuxFeatures? features = null)
        : base(cache, registry)
    {
        features ??= LinuxFeatures.Probe();
        features.RequireUdmabuf();
        _device = Interop.Libc.OpenReadWrite(features.UdmabufNode);
    }

    /// <inheritdoc/>
    public override string Name => "udmabuf";

    /// <inheritdoc/>
    public override unsafe DmaBufHandle Allocate(long size, string? name = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(size);
        DmaBuffer.ValidateName(name);
        ObjectDisposedException.ThrowIf(_device.IsClosed, this);
        long page = Environment.SystemPageSize;
        long pages = (size + page - 1) / page * page;
        SafeFdHandle fd;
        using (SafeFdHandle memfd = Interop.Libc.CreateMemfd(name ?? "udmabuf", pages))
        {
            Interop.Libc.AddSeals(memfd, Interop.Libc.F_SEAL_SHRINK | Interop.Libc.F_SEAL_GROW | Interop.Libc.F_SEAL_SEAL);
            var create = new Interop.Libc.udmabuf_create
            {
                memfd = (uint)memfd.Number,
                flags = Interop.Libc.UDMABUF_FLAGS_CLOEXEC,
                offset = 0,
                size = (ulong)pages,
            };
            bool added = false;
            try
            {
                memfd.DangerousAddRef(ref added);
                fd = new SafeFdHandle(Interop.Libc.Ioctl(_device, Interop.Libc.UDMABUF_CREATE, &create, "ioctl(UDMABUF_CREATE)"));
            }
            finally
            {
                if (added)
                {
                    memfd.DangerousRelease();
                }
            }
        }

        return ExportDmaBuf(fd, size, name);
    }

    /// <summary>Closes the device node. Buffers already allocated stay valid.</summary>
    public void Dispose() => _device.Dispose();
}

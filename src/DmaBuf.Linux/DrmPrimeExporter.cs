// Ownership: each buffer holds one GEM handle on the exporter's card, created with the dumb buffer and closed
// (DRM_IOCTL_GEM_CLOSE) when the buffer is released. The dma-buf descriptor keeps the GEM object alive on its own, so a
// buffer outlives the exporter; once the card is closed the kernel has dropped every handle and release closes nothing.
using System.Collections.Concurrent;

namespace DmaBuf.Linux;

/// <summary>
/// Buffers from a DRM driver through PRIME: a dumb buffer (<c>DRM_IOCTL_MODE_CREATE_DUMB</c>) exported as a dma-buf
/// (<c>DRM_IOCTL_PRIME_HANDLE_TO_FD</c>). The card is chosen by driver name (<c>DRM_IOCTL_VERSION</c>); the default,
/// <c>vgem</c>, is the kernel's virtual GEM driver, present wherever the <c>vgem</c> module loads.
/// </summary>
/// <remarks>
/// Importing a dma-buf back (<see cref="ImportHandle"/>, <c>DRM_IOCTL_PRIME_FD_TO_HANDLE</c>) gives the GEM handle the
/// card already has for it: for a buffer this exporter made, the handle it was created with.
/// </remarks>
public sealed class DrmPrimeExporter : LinuxExporter, IDisposable
{
    private readonly SafeFdHandle _card;
    private readonly ConcurrentDictionary<LinuxBuffer, uint> _handles = new(ReferenceEqualityComparer.Instance);

    /// <summary>Opens the first DRM card driven by <paramref name="driverName"/>.</summary>
    /// <param name="driverName">The driver's name as <c>DRM_IOCTL_VERSION</c> reports it, e.g. <c>vgem</c>.</param>
    /// <param name="cache">The mmap cache to map through; <see cref="MmapCache.Shared"/> when null.</param>
    /// <param name="registry">The registry to list buffers in; <see cref="BufferRegistry.Default"/> when null.</param>
    /// <param name="features">What the machine has; probed when null.</param>
    /// <exception cref="FeatureNotAvailableException">No card is driven by <paramref name="driverName"/>.</exception>
    /// <exception cref="LinuxErrorException">The card cannot be opened (permissions).</exception>
    public DrmPrimeExporter(string driverName = "vgem", MmapCache? cache = null, BufferRegistry? registry = null, LinuxFeatures? features = null)
        : base(cache, registry)
    {
        features ??= LinuxFeatures.Probe();
        CardNode = features.RequireDrmDriver(driverName);
        DriverName = driverName;
        Name = "drm-prime:" + driverName;
        _card = Interop.Libc.OpenReadWrite(CardNode);
    }

    /// <summary>The driver's name.</summary>
    public string DriverName { get; }

    /// <summary>The card node buffers are allocated on, e.g. <c>/dev/dri/card0</c>.</summary>
    public string CardNode { get; }

    /// <inheritdoc/>
    public override string Name { get; }

    /// <inheritdoc/>
    public override DmaBufHandle Allocate(long size, string? name = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(size);
        DmaBuffer.ValidateName(name);
        ObjectDisposedException.ThrowIf(_card.IsClosed, this);
        long page = Environment.SystemPageSize;
        long rows = (size + page - 1) / page; // one page per row at 8 bits per pixel
        if (rows > uint.MaxValue)
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, "A dumb buffer has at most 2^32 - 1 rows.");
        }

        Interop.Libc.drm_mode_create_dumb dumb = Interop.Libc.DrmCreateDumb(_card, (uint)page, (uint)rows);
        SafeFdHandle? fd = null;
        try
        {
            fd = Interop.Libc.DrmPrimeHandleToFd(_card, dumb.handle);
            if (name is not null)
            {
                LinuxDmaBuf.SetKernelName(fd, name);
            }
        }
        catch
        {
            fd?.Dispose();
            CloseHandle(dumb.handle);
            throw;
        }

        DmaBufHandle handle;
        try
        {
            handle = Export(fd, LinuxBufferKind.DmaBuf, size, name);
        }
        catch
        {
            CloseHandle(dumb.handle); // Export closed the descriptor
            throw;
        }

        _handles[handle.Buffer.GetLinuxBuffer()] = dumb.handle;
        return handle;
    }

    /// <summary>The GEM handle <paramref name="buffer"/> has on this exporter's card.</summary>
    /// <exception cref="ArgumentException">The buffer was not allocated by this exporter.</exception>
    /// <exception cref="ObjectDisposedException">The handle was disposed.</exception>
    public uint GemHandleOf(DmaBufHandle buffer)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        LinuxBuffer linux = buffer.Buffer.GetLinuxBuffer();
        return _handles.TryGetValue(linux, out uint gem)
            ? gem
            : throw new ArgumentException($"{buffer.Buffer} was not allocated by this {Name} exporter.", nameof(buffer));
    }

    /// <summary>
    /// Imports dma-buf <paramref name="dmaBuf"/> into this exporter's card (<c>DRM_IOCTL_PRIME_FD_TO_HANDLE</c>) and
    /// returns its GEM handle. For a buffer this exporter allocated that is <see cref="GemHandleOf"/> of the buffer: the
    /// card keeps one handle per buffer, however many times and through whichever descriptor it is imported. A handle
    /// made for another exporter's buffer stays open until the exporter is disposed.
    /// </summary>
    /// <param name="dmaBuf">A dma-buf descriptor; the caller keeps ownership.</param>
    /// <exception cref="LinuxErrorException">The descriptor is not a dma-buf the driver can import.</exception>
    /// <exception cref="ObjectDisposedException">The exporter was disposed.</exception>
    public uint ImportHandle(SafeFdHandle dmaBuf)
    {
        ArgumentNullException.ThrowIfNull(dmaBuf);
        ObjectDisposedException.ThrowIf(_card.IsClosed, this);
        return Interop.Libc.DrmPrimeFdToHandle(_card, dmaBuf);
    }

    /// <summary>Closes the card, which drops every GEM handle on it. Buffers already allocated stay valid.</summary>
    public void Dispose() => _card.Dispose();

    private protected override void OnReleased(DmaBuffer buffer, LinuxBuffer linux)
    {
        if (_handles.TryRemove(linux, out uint gem))
        {
            CloseHandle(gem);
        }
    }

    /// <summary>Drops a GEM handle; nothing to do once the card is closed (the kernel dropped them all). Never throws.</summary>
    private void CloseHandle(uint gem)
    {
        try
        {
            Interop.Libc.DrmGemClose(_card, gem);
        }
        catch (Exception e) when (e is ObjectDisposedException or LinuxErrorException)
        {
            // the card is closed (its handles went with it) or the handle is already gone: nothing is held
        }
    }
}

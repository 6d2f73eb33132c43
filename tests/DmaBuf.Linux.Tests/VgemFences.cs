using DmaBuf.Testing;

namespace DmaBuf.Linux.Tests;

/// <summary>
/// A test's vgem card and its fences (drivers/gpu/drm/vgem/vgem_fence.c): <c>VGEM_FENCE_ATTACH</c> puts an unsignaled
/// fence on a buffer's reservation object, <c>VGEM_FENCE_SIGNAL</c> signals it. Disposing closes the card file, which
/// signals every fence still pending on it, then the exporter.
/// </summary>
internal sealed class VgemFences : IDisposable
{
    private DrmPrimeExporter? _vgem;
    private SafeFdHandle? _cardFile;

    /// <summary>The exporter; skips the test when the machine has no vgem card.</summary>
    public DrmPrimeExporter Exporter => _vgem ??= KernelRequirement.Vgem();

    /// <summary>
    /// vgem's fence ioctls take a GEM handle of the file they are called on: a card descriptor of our own, onto which
    /// the buffers are imported (the same GEM object, so the same reservation object as the dma-buf's).
    /// </summary>
    public SafeFdHandle Card => _cardFile ??= Interop.Libc.OpenReadWrite(Exporter.CardNode);

    /// <summary>Attaches an unsignaled fence to <paramref name="handle"/>'s buffer (a write fence when <paramref name="write"/>) and returns its id.</summary>
    public uint Attach(DmaBufHandle handle, bool write)
    {
        uint gem = Interop.Libc.DrmPrimeFdToHandle(Card, handle.Buffer.GetLinuxBuffer().Fd);
        return Interop.Libc.DrmVgemFenceAttach(Card, gem, write);
    }

    /// <summary>Signals the fence <see cref="Attach"/> returned.</summary>
    public void Signal(uint fence) => Interop.Libc.DrmVgemFenceSignal(Card, fence);

    public void Dispose()
    {
        _cardFile?.Dispose(); // closing the file signals every vgem fence still pending on it
        _vgem?.Dispose();
    }
}

namespace DmaBuf;

/// <summary>
/// The importer's side of an attachment (<c>struct dma_buf_attach_ops</c>): a dynamic importer is told when the
/// exporter moves the buffer, instead of pinning it.
/// </summary>
public interface IDmaBufImporter
{
    /// <summary>
    /// The buffer moved: device addresses obtained from <paramref name="attachment"/> before now are stale and must
    /// be unmapped and mapped again before the next use. Called by <see cref="DmaBuffer.Move"/> with no framework lock
    /// held. Must not throw.
    /// </summary>
    void MoveNotify(DmaBufAttachment attachment);
}

// Ownership: a LinuxBuffer is the exporter-private object of one DmaBuffer (DmaBuffer.ExporterPrivate) and owns the
// buffer's descriptor. Only the exporter's Release disposes it, exactly once, after the buffer's cached mapping is gone.
namespace DmaBuf.Linux;

/// <summary>What backs a Linux buffer's descriptor.</summary>
public enum LinuxBufferKind
{
    /// <summary>A sealed memfd: shmem pages, coherent, no sync ioctls.</summary>
    Memfd,

    /// <summary>A dma-buf (from a dma-buf heap, udmabuf or another process): CPU access is bracketed with <c>DMA_BUF_IOCTL_SYNC</c>.</summary>
    DmaBuf,
}

/// <summary>
/// The exporter's side of one Linux buffer: its descriptor, its identity and the mmap cache it maps through. Get it with
/// <see cref="LinuxDmaBuf.GetLinuxBuffer"/>.
/// </summary>
public sealed class LinuxBuffer
{
    internal LinuxBuffer(SafeFdHandle fd, FileIdentity identity, LinuxBufferKind kind, long size, long fileSize, MmapCache cache, bool populate = true)
    {
        Populate = populate;
        Fd = fd;
        Identity = identity;
        Kind = kind;
        Size = size;
        FileSize = fileSize;
        Cache = cache;
    }

    /// <summary>Identity of the kernel object (<c>st_dev</c>, <c>st_ino</c>).</summary>
    public FileIdentity Identity { get; }

    /// <summary>What the descriptor is.</summary>
    public LinuxBufferKind Kind { get; }

    /// <summary>The buffer's size (the <see cref="DmaBuffer.Size"/>).</summary>
    public long Size { get; }

    /// <summary>The file's size by <c>fstat</c>; at least <see cref="Size"/> (heaps round up to pages).</summary>
    public long FileSize { get; }

    /// <summary>The mmap cache the buffer's CPU mappings go through.</summary>
    public MmapCache Cache { get; }

    /// <summary>The owned descriptor. Callers borrow it; only the exporter's release closes it.</summary>
    internal SafeFdHandle Fd { get; }

    /// <summary>
    /// Whether mappings are pre-faulted (<c>MAP_POPULATE</c>): yes for our own buffers, no for a peer's, whose sparse
    /// memfd would otherwise become resident here (its size counts against the channel's budget instead).
    /// </summary>
    internal bool Populate { get; }

    /// <summary>Bytes to map: the whole buffer.</summary>
    internal long MappedLength => Size;
}

// Ownership: Import always takes ownership of the descriptor it is given: it closes it when the descriptor is refused
// or when the buffer is already imported, and otherwise hands it to the new buffer. The cache itself holds no
// reference: it maps identities to buffers that are alive because someone else holds them, and forgets each buffer
// in that buffer's release (rule 3).
namespace DmaBuf.Linux;

/// <summary>
/// Imports buffers from descriptors that came from elsewhere (another process) and returns the same
/// <see cref="DmaBuffer"/> for the same underlying buffer, keyed by <see cref="FileIdentity"/> (rule 6): a buffer sent
/// twice, or over two connections, is one object with one mapping.
/// </summary>
/// <remarks>
/// Every descriptor is untrusted. It must be a memfd sealed against shrinking (a regular file whose
/// <c>/proc/self/fd</c> link reads <c>/memfd:</c>, <c>F_GET_SEALS</c> succeeding with <c>F_SEAL_SHRINK</c>) or a dma-buf
/// (on the dma-buf pseudo file system by <c>fstatfs</c>), open read-write, and at least as large as claimed
/// (<c>fstat</c>, read after the seals: a size read before them could be shrunk before they are set); otherwise
/// <see cref="BufferImportException"/> says why and the descriptor is closed. Imported buffers are mapped without
/// <c>MAP_POPULATE</c>, so a peer's sparse memfd stays sparse here, and each mapping is checked against the file's size
/// once it exists.
/// </remarks>
public sealed class ImportCache
{
    /// <summary>The largest buffer <see cref="Shared"/> accepts: 4 GiB.</summary>
    public const long DefaultMaxBufferSize = 4L << 30;

    private readonly Lock _lock = new();
    private readonly Dictionary<FileIdentity, DmaBuffer> _buffers = [];
    private readonly ImportedExporter _memfd;
    private readonly ImportedExporter _dmaBuf;
    private long _hits;
    private long _misses;

    /// <summary>Creates an import cache.</summary>
    /// <param name="cache">The mmap cache imported buffers map through; <see cref="MmapCache.Shared"/> when null.</param>
    /// <param name="registry">The registry imported buffers are listed in; <see cref="BufferRegistry.Default"/> when null.</param>
    /// <param name="maxBufferSize">The largest size a peer may claim.</param>
    public ImportCache(MmapCache? cache = null, BufferRegistry? registry = null, long maxBufferSize = DefaultMaxBufferSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxBufferSize);
        MaxBufferSize = maxBufferSize;
        _memfd = new ImportedExporter(this, "import:memfd", cache, registry);
        _dmaBuf = new ImportedExporter(this, "import:dma-buf", cache, registry);
        Cache = _memfd.Cache;
    }

    /// <summary>The process-wide import cache.</summary>
    public static ImportCache Shared { get; } = new();

    /// <summary>The mmap cache imported buffers map through.</summary>
    public MmapCache Cache { get; }

    /// <summary>The largest size a peer may claim.</summary>
    public long MaxBufferSize { get; }

    /// <summary>Live imported buffers.</summary>
    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _buffers.Count;
            }
        }
    }

    /// <summary>Imports that found the buffer already imported.</summary>
    public long Hits => Interlocked.Read(ref _hits);

    /// <summary>Imports that made a new buffer.</summary>
    public long Misses => Interlocked.Read(ref _misses);

    /// <summary>
    /// Imports <paramref name="fd"/> as a buffer of <paramref name="size"/> bytes and returns a new reference to it: the
    /// buffer already imported for the same identity if it is still alive, a new one otherwise.
    /// </summary>
    /// <param name="fd">The descriptor; always taken over (see the file's ownership note).</param>
    /// <param name="size">The size the sender claims.</param>
    /// <exception cref="BufferImportException">The descriptor is not a safe buffer; it was closed.</exception>
    public DmaBufHandle Import(SafeFdHandle fd, long size)
    {
        ArgumentNullException.ThrowIfNull(fd);
        bool owned = true;
        try
        {
            (LinuxBufferKind kind, FileIdentity identity) = Validate(fd, size, MaxBufferSize);
            if (TryGetLive(identity, size) is { } existing)
            {
                Interlocked.Increment(ref _hits);
                LinuxMetrics.s_importHits.Add(1);
                return existing;
            }

            owned = false; // Export takes it over, also on failure
            DmaBufHandle fresh = (kind == LinuxBufferKind.Memfd ? _memfd : _dmaBuf).ExportImported(fd, kind, size);
            DmaBufHandle? winner = null;
            lock (_lock)
            {
                if (_buffers.TryGetValue(identity, out DmaBuffer? other) && other.TryAddReference() is { } raced)
                {
                    winner = raced; // another thread imported it meanwhile
                }
                else
                {
                    _buffers[identity] = fresh.Buffer;
                }
            }

            if (winner is not null)
            {
                fresh.Dispose();
                CheckSize(winner, identity, size); // the winner's claim may have been another size
                Interlocked.Increment(ref _hits);
                return winner;
            }

            Interlocked.Increment(ref _misses);
            LinuxMetrics.s_imports.Add(1);
            return fresh;
        }
        finally
        {
            if (owned)
            {
                fd.Dispose();
            }
        }
    }

    /// <summary>A new reference to the live buffer imported for <paramref name="identity"/>, or null.</summary>
    public DmaBufHandle? TryGet(FileIdentity identity)
    {
        lock (_lock)
        {
            return _buffers.TryGetValue(identity, out DmaBuffer? buffer) ? buffer.TryAddReference() : null;
        }
    }

    /// <summary>
    /// Checks that <paramref name="fd"/> is a buffer we can map safely and returns what it is. Does not close it.
    /// </summary>
    /// <exception cref="BufferImportException">It is not.</exception>
    internal static (LinuxBufferKind Kind, FileIdentity Identity) Validate(SafeFdHandle fd, long size, long maxSize)
    {
        if (size <= 0 || size > maxSize)
        {
            throw new BufferImportException(ChannelErrorReason.BadBufferSize, $"Claimed size {size} is outside 1..{maxSize} bytes.");
        }

        Interop.Libc.FileStatus st;
        string link;
        try
        {
            st = Interop.Libc.FStat(fd);
            link = Interop.Libc.FdLinkTarget(fd);
        }
        catch (LinuxErrorException e)
        {
            throw new BufferImportException(ChannelErrorReason.NotASharedBuffer, $"The descriptor cannot be inspected: {e.Message}", e);
        }

        // What stops a change is read before what it stops: the type and identity of a file cannot change, a memfd's
        // seals can only grow, and its size can change until F_SEAL_SHRINK is set. So the size is read (again) only
        // after the seals proved it can no longer shrink. A peer that shrinks and seals between our reads is caught.
        LinuxBufferKind kind;
        if (st.IsRegularFile && link.StartsWith("/memfd:", StringComparison.Ordinal))
        {
            int seals = Interop.Libc.TryGetSeals(fd, out int errno);
            if (seals < 0)
            {
                throw new BufferImportException(
                    ChannelErrorReason.NotASharedBuffer, $"'{link}' looks like a memfd but F_GET_SEALS fails ({Interop.Libc.ErrnoName(errno)}).");
            }

            if ((seals & Interop.Libc.F_SEAL_SHRINK) == 0)
            {
                throw new BufferImportException(
                    ChannelErrorReason.NotSealed, $"memfd '{link}' is not sealed against shrinking (seals 0x{seals:x}); its owner could truncate it under our mapping.");
            }

            kind = LinuxBufferKind.Memfd;
            Interop.Libc.FileStatus sealedStatus;
            try
            {
                sealedStatus = Interop.Libc.FStat(fd);
            }
            catch (LinuxErrorException e)
            {
                throw new BufferImportException(ChannelErrorReason.NotASharedBuffer, $"The descriptor cannot be inspected: {e.Message}", e);
            }

            if (sealedStatus.Device != st.Device || sealedStatus.Inode != st.Inode)
            {
                throw new BufferImportException(ChannelErrorReason.NotASharedBuffer, $"'{link}' changed identity between two fstat calls.");
            }

            st = sealedStatus; // the size that counts: read after the seals
        }
        else if (IsDmaBuf(fd))
        {
            kind = LinuxBufferKind.DmaBuf; // dma-bufs cannot change size
        }
        else
        {
            throw new BufferImportException(
                ChannelErrorReason.NotASharedBuffer,
                $"The descriptor is {Describe(st.FileType)} ('{link}'), not a memfd or a dma-buf.");
        }

        int flags = Interop.Libc.fcntl(fd, Interop.Libc.F_GETFL, 0);
        if (flags < 0 || (flags & Interop.Libc.O_ACCMODE) != Interop.Libc.O_RDWR)
        {
            throw new BufferImportException(ChannelErrorReason.NotASharedBuffer, $"'{link}' is not open read-write.");
        }

        if (st.Size < size)
        {
            throw new BufferImportException(
                ChannelErrorReason.BufferTooSmall, $"'{link}' has {st.Size} bytes, but the peer claims {size}.");
        }

        return (kind, new FileIdentity(st.Device, st.Inode));
    }

    /// <summary>
    /// Whether <paramref name="fd"/> lives on the dma-buf pseudo file system. The <c>/proc/self/fd</c> link
    /// (<c>/dmabuf:name</c>) is not proof: root can create a file of that name.
    /// </summary>
    private static bool IsDmaBuf(SafeFdHandle fd)
    {
        try
        {
            return Interop.Libc.FileSystemType(fd) == Interop.Libc.DMA_BUF_MAGIC;
        }
        catch (LinuxErrorException)
        {
            return false;
        }
    }

    private DmaBufHandle? TryGetLive(FileIdentity identity, long size)
    {
        DmaBufHandle? handle = TryGet(identity);
        if (handle is not null)
        {
            CheckSize(handle, identity, size);
        }

        return handle;
    }

    /// <summary>Refuses (disposing <paramref name="handle"/>) a claim of another size than the live import's.</summary>
    private static void CheckSize(DmaBufHandle handle, FileIdentity identity, long size)
    {
        if (handle.Buffer.Size != size)
        {
            long known = handle.Buffer.Size;
            handle.Dispose();
            throw new BufferImportException(
                ChannelErrorReason.BadBufferSize, $"The buffer ({identity}) was imported with {known} bytes; now the peer claims {size}.");
        }
    }

    private void Forget(FileIdentity identity, DmaBuffer buffer)
    {
        lock (_lock)
        {
            if (_buffers.TryGetValue(identity, out DmaBuffer? current) && ReferenceEquals(current, buffer))
            {
                _buffers.Remove(identity);
            }
        }
    }

    private static string Describe(uint fileType) => fileType switch
    {
        Interop.Libc.S_IFREG => "a regular file",
        Interop.Libc.S_IFIFO => "a pipe",
        Interop.Libc.S_IFSOCK => "a socket",
        0 => "an anonymous inode",
        _ => $"a file of type 0x{fileType:x}",
    };

    /// <summary>The exporter of imported buffers: the Linux operations, plus forgetting the import on release.</summary>
    private sealed class ImportedExporter(ImportCache owner, string name, MmapCache? cache, BufferRegistry? registry)
        : LinuxExporter(cache, registry)
    {
        public override string Name { get; } = name;

        private protected override bool PopulateMappings => false;

        public override DmaBufHandle Allocate(long size, string? name = null) =>
            throw new NotSupportedException("Imported buffers come from a descriptor; they are not allocated here.");

        internal DmaBufHandle ExportImported(SafeFdHandle fd, LinuxBufferKind kind, long size) => Export(fd, kind, size, name: null);

        private protected override void OnReleased(DmaBuffer buffer, LinuxBuffer linux) => owner.Forget(linux.Identity, buffer);
    }
}

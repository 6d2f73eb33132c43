// Ownership: a DmaBufHandle is one counted reference to a buffer, like an open fd. Whoever receives one disposes it
// exactly once. Duplicate() hands the caller a new, independent reference. Dispose is idempotent per handle, so a
// handle can never drop the buffer's count twice. Outstanding CPU access brackets are tracked per handle, as the
// kernel tracks them per file.
namespace DmaBuf;

/// <summary>
/// One counted reference to a <see cref="DmaBuffer"/> (what an fd is to a <c>struct dma_buf</c>). Disposing it drops the
/// reference; the buffer is released when its last reference goes.
/// </summary>
/// <remarks>Using a disposed handle throws <see cref="ObjectDisposedException"/>. Members are thread-safe.</remarks>
public sealed class DmaBufHandle : IDisposable
{
    private readonly DmaBuffer _buffer;
    private readonly object _cpuLock = new(); // a Monitor, so Coyote can schedule inside it
    private int _disposed;
    private int _cpuReaders;
    private int _cpuWriters;

    internal DmaBufHandle(DmaBuffer buffer) => _buffer = buffer;

    /// <summary>The buffer this handle refers to.</summary>
    /// <exception cref="ObjectDisposedException">The handle was disposed.</exception>
    public DmaBuffer Buffer
    {
        get
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
            return _buffer;
        }
    }

    /// <summary>Whether this handle was disposed.</summary>
    public bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    /// <summary>The buffer's id, readable without a live handle (for logs).</summary>
    public long BufferId => _buffer.Id;

    /// <summary>Takes another reference to the same buffer (<c>dup()</c> / <c>get_dma_buf</c>).</summary>
    /// <exception cref="ObjectDisposedException">The handle was disposed.</exception>
    public DmaBufHandle Duplicate()
    {
        DmaBuffer buffer = Buffer;
        buffer.AddRef();
        return new DmaBufHandle(buffer);
    }

    /// <summary>
    /// Attaches <paramref name="device"/> to the buffer (<c>dma_buf_attach</c>). The attachment holds its own reference,
    /// so the buffer outlives this handle while the attachment lives.
    /// </summary>
    /// <param name="device">The importing device.</param>
    /// <param name="importerPrivate">The importer's private object, kept on the attachment.</param>
    /// <param name="importer">A dynamic importer, told when the buffer moves; null for a static importer, whose
    /// mappings pin the buffer.</param>
    /// <exception cref="ObjectDisposedException">The handle was disposed.</exception>
    /// <exception cref="NotSupportedException">The exporter refused the device.</exception>
    public DmaBufAttachment Attach(IDmaDevice device, object? importerPrivate = null, IDmaBufImporter? importer = null)
    {
        ArgumentNullException.ThrowIfNull(device);
        return DmaBufAttachment.Create(Buffer, device, importerPrivate, importer);
    }

    /// <summary>
    /// Starts CPU access in <paramref name="access"/> direction (<c>DMA_BUF_IOCTL_SYNC</c> with <c>SYNC_START</c>).
    /// Each begin must be matched by an <see cref="EndCpuAccess"/> with the same flags on this handle.
    /// </summary>
    /// <exception cref="ArgumentException">The flags are empty or have unknown bits.</exception>
    /// <exception cref="ObjectDisposedException">The handle was disposed.</exception>
    public void BeginCpuAccess(CpuAccess access)
    {
        ValidateAccess(access);
        DmaBuffer buffer = Buffer;
        buffer.Exporter.BeginCpuAccess(buffer, access);
        lock (_cpuLock)
        {
            if ((access & CpuAccess.Read) != 0)
            {
                _cpuReaders++;
            }

            if ((access & CpuAccess.Write) != 0)
            {
                _cpuWriters++;
            }
        }
    }

    /// <summary>Ends CPU access started by <see cref="BeginCpuAccess"/> with the same flags (<c>SYNC_END</c>).</summary>
    /// <exception cref="ArgumentException">The flags are empty or have unknown bits.</exception>
    /// <exception cref="InvalidOperationException">No CPU access in that direction was begun on this handle.</exception>
    /// <exception cref="ObjectDisposedException">The handle was disposed.</exception>
    public void EndCpuAccess(CpuAccess access)
    {
        ValidateAccess(access);
        DmaBuffer buffer = Buffer;
        lock (_cpuLock)
        {
            bool read = (access & CpuAccess.Read) != 0;
            bool write = (access & CpuAccess.Write) != 0;
            if ((read && _cpuReaders == 0) || (write && _cpuWriters == 0))
            {
                throw new InvalidOperationException(
                    $"EndCpuAccess({access}) on {buffer} without a matching BeginCpuAccess({access}) on this handle " +
                    $"(open: {_cpuReaders} read, {_cpuWriters} write).");
            }

            if (read)
            {
                _cpuReaders--;
            }

            if (write)
            {
                _cpuWriters--;
            }
        }

        buffer.Exporter.EndCpuAccess(buffer, access);
    }

    /// <summary>Number of CPU access brackets begun and not yet ended on this handle.</summary>
    public int OpenCpuAccesses
    {
        get
        {
            lock (_cpuLock)
            {
                return _cpuReaders + _cpuWriters;
            }
        }
    }

    /// <summary>
    /// Maps the buffer for the CPU (<c>dma_buf_vmap</c>). The view holds a reference of its own until disposed.
    /// </summary>
    /// <exception cref="NotSupportedException">The exporter has no CPU view.</exception>
    /// <exception cref="ObjectDisposedException">The handle was disposed.</exception>
    public IDmaBufCpuView Vmap()
    {
        // The new reference is handed to the view, which disposes it; on failure it is disposed here.
#pragma warning disable CA2000
        DmaBufHandle reference = Duplicate();
#pragma warning restore CA2000
        try
        {
            IDmaBufCpuView view = reference._buffer.Exporter.Vmap(reference._buffer);
            return new HeldView(view, reference);
        }
        catch
        {
            reference.Dispose();
            throw;
        }
    }

    /// <summary>Drops this reference. Idempotent for one handle.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _buffer.ReleaseRef();
        }
    }

    /// <inheritdoc/>
    public override string ToString() => $"handle to {_buffer}{(IsDisposed ? " (disposed)" : "")}";

    private static void ValidateAccess(CpuAccess access)
    {
        if (access == 0 || (access & ~CpuAccess.ReadWrite) != 0)
        {
            throw new ArgumentException(
                $"CPU access flags {(int)access:x} are invalid; use Read, Write or ReadWrite.", nameof(access));
        }
    }

    private sealed class HeldView(IDmaBufCpuView inner, DmaBufHandle reference) : IDmaBufCpuView
    {
        private int _disposed;

        public long Length => inner.Length;

        public void Read(long offset, Span<byte> destination)
        {
            ObjectDisposedException.ThrowIf(reference.IsDisposed, this);
            inner.Read(offset, destination);
        }

        public void Write(long offset, ReadOnlySpan<byte> source)
        {
            ObjectDisposedException.ThrowIf(reference.IsDisposed, this);
            inner.Write(offset, source);
        }

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                inner.Dispose();
                reference.Dispose();
            }
        }
    }
}

// Ownership: the pool owns one reference to each of its buffers and disposes them all on Dispose. Rent lends a
// buffer: the caller uses the pool's handle and must not dispose it; Return (by id) makes it available again.
using System.Diagnostics.CodeAnalysis;

namespace DmaBuf.Linux;

/// <summary>
/// A fixed set of buffers handed out in turn (least recently returned first), like a decoder's frame pool. A
/// <see cref="BufferChannel"/> given the pool returns buffers to it when the peer releases them or goes away.
/// </summary>
public sealed class BufferPool : IDisposable
{
    private readonly Lock _lock = new();
    private readonly DmaBufHandle[] _buffers;
    private readonly Dictionary<long, DmaBufHandle> _byId = [];
    private readonly Queue<long> _free = new();
    private readonly HashSet<long> _rented = [];
    private bool _disposed;

    /// <summary>Makes a pool of <paramref name="buffers"/>, taking ownership of each handle.</summary>
    public BufferPool(IEnumerable<DmaBufHandle> buffers)
    {
        ArgumentNullException.ThrowIfNull(buffers);
        _buffers = [.. buffers];
        foreach (DmaBufHandle b in _buffers)
        {
            _byId.Add(b.BufferId, b);
            _free.Enqueue(b.BufferId);
        }
    }

    /// <summary>Allocates <paramref name="count"/> buffers of <paramref name="size"/> bytes from <paramref name="exporter"/>.</summary>
    /// <exception cref="LinuxErrorException">An allocation failed; the buffers allocated before it are released.</exception>
    public static BufferPool Allocate(LinuxExporter exporter, int count, long size, string namePrefix = "frame")
    {
        ArgumentNullException.ThrowIfNull(exporter);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(count);
        var made = new List<DmaBufHandle>(count);
        try
        {
            for (int i = 0; i < count; i++)
            {
                made.Add(exporter.Allocate(size, $"{namePrefix}-{i}"));
            }

            return new BufferPool(made);
        }
        catch
        {
            made.ForEach(h => h.Dispose());
            throw;
        }
    }

    /// <summary>Number of buffers.</summary>
    public int Count => _buffers.Length;

    /// <summary>Buffers available to rent now.</summary>
    public int Available
    {
        get
        {
            lock (_lock)
            {
                return _free.Count;
            }
        }
    }

    /// <summary>The pool's buffers (borrowed handles: do not dispose).</summary>
    public IReadOnlyList<DmaBufHandle> Buffers => _buffers;

    /// <summary>Lends the buffer returned longest ago, or false when all are out.</summary>
    /// <exception cref="ObjectDisposedException">The pool was disposed.</exception>
    public bool TryRent([NotNullWhen(true)] out DmaBufHandle? buffer)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_free.TryDequeue(out long id))
            {
                _rented.Add(id);
                buffer = _byId[id];
                return true;
            }
        }

        buffer = null;
        return false;
    }

    /// <summary>Makes buffer <paramref name="bufferId"/> available again. Returns false if it was not rented from this pool.</summary>
    public bool Return(long bufferId)
    {
        lock (_lock)
        {
            if (_disposed || !_rented.Remove(bufferId))
            {
                return false;
            }

            _free.Enqueue(bufferId);
            return true;
        }
    }

    /// <summary>Whether buffer <paramref name="bufferId"/> is rented out.</summary>
    public bool IsRented(long bufferId)
    {
        lock (_lock)
        {
            return _rented.Contains(bufferId);
        }
    }

    /// <summary>Drops the pool's references. Buffers still held elsewhere (a peer, a channel) live until those go.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
        }

        foreach (DmaBufHandle b in _buffers)
        {
            b.Dispose();
        }
    }
}

// Ownership: the pool owns one reference to each of its buffers and disposes them all on Dispose. Rent lends a
// buffer: the caller uses the pool's handle and must not dispose it. A rented buffer comes back when the last hold on it
// goes: each delivery of it out with a channel's peer holds it, and a caller may hold it (Hold) around sends to several
// channels; a rented buffer nothing holds is its renter's, who sends it or gives it back (Return).
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace DmaBuf.Linux;

/// <summary>
/// A fixed set of buffers handed out in turn (least recently returned first), like a decoder's frame pool. A
/// <see cref="BufferChannel"/> given the pool (<see cref="BufferChannelOptions.ReturnTo"/>) holds each rented buffer
/// while any delivery of it is out with its peer, and the buffer comes back when the last channel's peer releases it
/// (or goes away). Several channels may share one pool, and one frame may go to several of them: to keep it from
/// coming back between those sends (the first peer may release before the last send), <see cref="Hold"/> it first and
/// <see cref="Return"/> it after.
/// </summary>
public sealed class BufferPool : IDisposable
{
    private readonly Lock _lock = new();
    private readonly DmaBufHandle[] _buffers;
    private readonly Dictionary<long, DmaBufHandle> _byId = [];
    private readonly Queue<long> _free = new();
    private readonly Dictionary<long, Holds> _rented = []; // rented buffers, by id: what holds each
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
                _rented.Add(id, default);
                buffer = _byId[id];
                return true;
            }
        }

        buffer = null;
        return false;
    }

    /// <summary>
    /// Holds rented buffer <paramref name="bufferId"/> for the caller, who gives the hold back with <see cref="Return"/>:
    /// until then the buffer stays rented even when every channel's peer has released it. Returns false if it is not
    /// rented from this pool.
    /// </summary>
    public bool Hold(long bufferId)
    {
        lock (_lock)
        {
            ref Holds holds = ref CollectionsMarshal.GetValueRefOrNullRef(_rented, bufferId);
            if (_disposed || Unsafe.IsNullRef(ref holds))
            {
                return false;
            }

            holds.Callers++;
            return true;
        }
    }

    /// <summary>
    /// Gives back a hold on rented buffer <paramref name="bufferId"/>: one taken with <see cref="Hold"/>, or else the
    /// renter's own, for a buffer it did not send. The buffer is available again once nothing holds it. Returns false if
    /// it was not rented from this pool, or if the caller had no hold and a channel's delivery of it is out (the buffer
    /// comes back when that peer releases it).
    /// </summary>
    public bool Return(long bufferId)
    {
        lock (_lock)
        {
            ref Holds holds = ref CollectionsMarshal.GetValueRefOrNullRef(_rented, bufferId);
            if (_disposed || Unsafe.IsNullRef(ref holds))
            {
                return false;
            }

            if (holds.Callers > 0)
            {
                holds.Callers--;
            }
            else if (holds.Channels > 0)
            {
                return false;
            }

            FreeIfUnheldLocked(bufferId, holds);
            return true;
        }
    }

    /// <summary>
    /// A channel's delivery of <paramref name="bufferId"/> is going out: it holds the buffer until the peer releases it
    /// or the connection closes (<see cref="DropChannelHold"/>), or the send fails (<see cref="UndoChannelHold"/>).
    /// </summary>
    internal ChannelHold TakeChannelHold(long bufferId)
    {
        lock (_lock)
        {
            if (_disposed || !_byId.ContainsKey(bufferId))
            {
                return ChannelHold.NotInPool;
            }

            ref Holds holds = ref CollectionsMarshal.GetValueRefOrNullRef(_rented, bufferId);
            if (Unsafe.IsNullRef(ref holds))
            {
                return ChannelHold.NotRented;
            }

            holds.Channels++;
            return ChannelHold.Held;
        }
    }

    /// <summary>A channel's delivery of <paramref name="bufferId"/> ended (released, or closed); true when the buffer is available again.</summary>
    internal bool DropChannelHold(long bufferId)
    {
        lock (_lock)
        {
            ref Holds holds = ref CollectionsMarshal.GetValueRefOrNullRef(_rented, bufferId);
            if (_disposed || Unsafe.IsNullRef(ref holds) || holds.Channels == 0)
            {
                return false;
            }

            holds.Channels--;
            return FreeIfUnheldLocked(bufferId, holds);
        }
    }

    /// <summary>The send that took a channel's hold failed: the hold goes, and the buffer stays with its renter.</summary>
    internal void UndoChannelHold(long bufferId)
    {
        lock (_lock)
        {
            ref Holds holds = ref CollectionsMarshal.GetValueRefOrNullRef(_rented, bufferId);
            if (!Unsafe.IsNullRef(ref holds) && holds.Channels > 0)
            {
                holds.Channels--;
            }
        }
    }

    private bool FreeIfUnheldLocked(long bufferId, Holds holds)
    {
        if (holds.Channels != 0 || holds.Callers != 0)
        {
            return false;
        }

        _rented.Remove(bufferId);
        _free.Enqueue(bufferId);
        return true;
    }

    /// <summary>Whether buffer <paramref name="bufferId"/> is rented out.</summary>
    public bool IsRented(long bufferId)
    {
        lock (_lock)
        {
            return _rented.ContainsKey(bufferId);
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

    /// <summary>What holds a rented buffer: channels' deliveries of it out, and callers' <see cref="Hold"/>s.</summary>
    private struct Holds
    {
        public int Channels;
        public int Callers;
    }
}

/// <summary>What <see cref="BufferPool.TakeChannelHold"/> found.</summary>
internal enum ChannelHold
{
    /// <summary>Not one of the pool's buffers: the channel sends it without holding anything.</summary>
    NotInPool,

    /// <summary>One of the pool's buffers, but not rented: sending it could hand the peer a frame being reused.</summary>
    NotRented,

    /// <summary>Held for the channel.</summary>
    Held,
}

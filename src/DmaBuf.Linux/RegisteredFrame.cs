// Ownership: a FrameMapping owns one unmap action (for a channel: a CpuMapping, which also holds its own reference to
// the buffer). It is counted: the registration in the ledger holds one count, every lease out holds one; the unmap runs
// exactly once, when the last count goes (the registration was forgotten or the channel closed, and every lease was
// disposed). Leases are pooled per mapping and reused after Dispose; each use has a generation number, so a view kept
// from an earlier use throws ObjectDisposedException instead of reading whatever frame the lease carries now.
namespace DmaBuf.Linux;

/// <summary>
/// The one CPU mapping of a peer's registered buffer, kept while the registration lasts and handed out per delivery
/// as pooled <see cref="FrameLease"/>s, so an id-only delivery costs no mapping-cache lookup, no new reference and no
/// allocation in steady state.
/// </summary>
internal sealed class FrameMapping
{
    private readonly IDisposable _unmap;
    private readonly Stack<FrameLease> _free = new(); // free leases beyond the spare, under its own lock
    private FrameLease? _spare; // one free lease, taken and put back with one atomic exchange
    private int _count = 1; // the registration's
    private int _retired;

    internal FrameMapping(nint address, long length, IDisposable unmap, DmaBufHandle? reference = null)
    {
        Address = address;
        Length = length;
        Reference = reference;
        _unmap = unmap;
    }

    internal nint Address { get; }

    internal long Length { get; }

    /// <summary>A reference to the mapped buffer, alive while any count is held (null in ledger tests).</summary>
    internal DmaBufHandle? Reference { get; }

    /// <summary>Whether the unmap ran.</summary>
    internal bool IsUnmapped => Volatile.Read(ref _count) == 0;

    /// <summary>Maps <paramref name="handle"/> once for its registration; null when it cannot be mapped by the CPU.</summary>
    internal static FrameMapping? TryMap(DmaBufHandle handle)
    {
#pragma warning disable CA2000 // the mapping passes to the FrameMapping, whose last count disposes it
        CpuMapping mapping;
        try
        {
            mapping = handle.MapCpu();
        }
        catch (Exception e) when (e is LinuxErrorException or NotSupportedException or InvalidOperationException)
        {
            return null; // not mappable here: deliveries then map through their handle, as before
        }

        return new FrameMapping(mapping.Address, mapping.Length, mapping, mapping.Reference);
#pragma warning restore CA2000
    }

    /// <summary>A lease for one delivery. Only while the registration holds its count (under the ledger's lock).</summary>
    internal FrameLease Lease()
    {
        Interlocked.Increment(ref _count);
        FrameLease? lease = Interlocked.Exchange(ref _spare, null); // the usual case: one lease out at a time, no lock
        if (lease is null)
        {
            lock (_free)
            {
                _free.TryPop(out lease);
            }
        }

        lease ??= new FrameLease(this);
        lease.Open();
        return lease;
    }

    /// <summary>The registration ends (forgotten or closed): drops its count. Idempotent.</summary>
    internal void Retire()
    {
        if (Interlocked.Exchange(ref _retired, 1) == 0)
        {
            Release();
        }
    }

    internal void Return(FrameLease lease)
    {
        if (Interlocked.CompareExchange(ref _spare, lease, null) is not null)
        {
            lock (_free)
            {
                _free.Push(lease);
            }
        }

        Release();
    }

    private void Release()
    {
        if (Interlocked.Decrement(ref _count) == 0)
        {
            _unmap.Dispose();
        }
    }
}

/// <summary>One delivery's hold on a <see cref="FrameMapping"/>; pooled, and numbered per use.</summary>
internal sealed class FrameLease
{
    // The use's number and whether it is open, in one word (generation << 1 | open), so that ending a use is one
    // compare-and-swap: two disposals of one use cannot both succeed, even when the lease is reused in between. 64 bits:
    // with 32, the number came round again after 2^31 uses of one lease (a few minutes of a tight in-process loop),
    // and a view kept from the first use would have read the later one's frame.
    private long _state;

    internal FrameLease(FrameMapping mapping) => Mapping = mapping;

    /// <summary>A lease whose first use is number <paramref name="generation"/> (tests of the number's range).</summary>
    internal FrameLease(FrameMapping mapping, long generation)
        : this(mapping) => _state = generation << 1;

    internal FrameMapping Mapping { get; }

    /// <summary>The number of the current use; a view made in an earlier use is stale.</summary>
    internal long Generation => Volatile.Read(ref _state) >> 1;

    /// <summary>Opens the next use; only by the one leasing it (a new lease, or one taken from the pool).</summary>
    internal void Open() => Volatile.Write(ref _state, Volatile.Read(ref _state) | 1);

    /// <summary>Whether use <paramref name="generation"/> is the current one and not yet disposed.</summary>
    internal bool IsLive(long generation) => Volatile.Read(ref _state) == Live(generation);

    /// <summary>Ends use <paramref name="generation"/> (nothing if it ended already) and returns the lease to its pool.</summary>
    internal void Dispose(long generation)
    {
        long live = Live(generation);
        if (Interlocked.CompareExchange(ref _state, unchecked(generation + 1) << 1, live) == live)
        {
            Mapping.Return(this); // every view of this use is stale from now on
        }
    }

    private static long Live(long generation) => (generation << 1) | 1;
}

/// <summary>
/// The bytes of a received frame, in place, through the registration's one CPU mapping: no copy, no allocation. Valid
/// until the <see cref="ReceivedBuffer"/> it came from is disposed; after that every member throws
/// <see cref="ObjectDisposedException"/>, even when the pooled lease behind it already carries another delivery.
/// </summary>
/// <remarks>As with <see cref="CpuMapping"/>, another process may be writing the memory: bracket accesses with
/// <see cref="DmaBufHandle.BeginCpuAccess"/>/<see cref="DmaBufHandle.EndCpuAccess"/> and keep no span past the
/// delivery's Dispose.</remarks>
public readonly unsafe struct ReceivedFrame
{
    private readonly FrameLease? _lease;
    private readonly long _generation;

    internal ReceivedFrame(FrameLease lease, long generation)
    {
        _lease = lease;
        _generation = generation;
    }

    /// <summary>The buffer's size in bytes.</summary>
    /// <exception cref="ObjectDisposedException">The delivery was disposed.</exception>
    public long Length => Live().Length;

    /// <summary>The bytes from <paramref name="offset"/>, <paramref name="length"/> long, in place.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is outside the buffer.</exception>
    /// <exception cref="ObjectDisposedException">The delivery was disposed.</exception>
    public Span<byte> GetSpan(long offset, int length)
    {
        FrameMapping m = Live();
        if (offset < 0 || length < 0 || offset > m.Length - length)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"Range [{offset}, +{length}) is outside the {m.Length}-byte buffer.");
        }

        return new Span<byte>((byte*)m.Address + offset, length);
    }

    /// <summary>The whole buffer in place; buffers over 2 GiB need <see cref="GetSpan"/>.</summary>
    /// <exception cref="InvalidOperationException">The buffer is larger than a span can be.</exception>
    /// <exception cref="ObjectDisposedException">The delivery was disposed.</exception>
    public Span<byte> Span
    {
        get
        {
            long length = Length;
            return length <= int.MaxValue
                ? GetSpan(0, (int)length)
                : throw new InvalidOperationException($"A {length}-byte buffer does not fit one span; use GetSpan.");
        }
    }

    /// <summary>
    /// Begins a CPU access to the frame, as <see cref="DmaBufHandle.BeginCpuAccess"/> does for the buffer (the
    /// dma-buf's cache synchronisation where it is one), without making a handle for the delivery.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The delivery was disposed.</exception>
    public void BeginCpuAccess(CpuAccess access) => Buffer().BeginCpuAccess(access);

    /// <summary>Ends a CPU access begun by <see cref="BeginCpuAccess"/>.</summary>
    /// <exception cref="ObjectDisposedException">The delivery was disposed.</exception>
    public void EndCpuAccess(CpuAccess access) => Buffer().EndCpuAccess(access);

    private DmaBufHandle Buffer() =>
        Live().Reference ?? throw new InvalidOperationException("This frame's mapping holds no buffer reference to synchronise through.");

    private FrameMapping Live()
    {
        FrameLease? lease = _lease;
        if (lease is null || !lease.IsLive(_generation))
        {
            throw new ObjectDisposedException(nameof(ReceivedFrame), "The delivery this frame came from was disposed.");
        }

        return lease.Mapping;
    }
}

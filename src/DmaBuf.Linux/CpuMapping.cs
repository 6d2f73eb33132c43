// Ownership: a CpuMapping is one lease on a buffer's mmap in this process. Dispose it exactly once; until then the
// memory stays mapped even if the cache evicts the mapping or the buffer's other users let go. A lease made from a
// handle (LinuxDmaBuf.MapCpu) also holds a reference to the buffer and drops it on Dispose.

namespace DmaBuf.Linux;

/// <summary>A lease on the CPU mapping of a Linux buffer: the bytes, in place, with no copy.</summary>
/// <remarks>
/// Spans from <see cref="GetSpan"/> point into shared memory that another process may be writing: bracket accesses with
/// <see cref="DmaBufHandle.BeginCpuAccess"/>/<see cref="DmaBufHandle.EndCpuAccess"/> and do not keep a span past
/// <see cref="Dispose"/>. Members are not synchronized with <see cref="Dispose"/>.
/// </remarks>
public sealed unsafe class CpuMapping : IDmaBufCpuView
{
    private readonly MmapCache _cache;
    private readonly MmapCache.Region _region;
    private readonly DmaBufHandle? _reference;
    private int _disposed;

    internal CpuMapping(MmapCache cache, MmapCache.Region region, long length, DmaBufHandle? reference)
    {
        _cache = cache;
        _region = region;
        _reference = reference;
        Length = length;
    }

    /// <summary>The buffer's size in bytes; the mapping covers all of it.</summary>
    public long Length { get; }

    /// <summary>The reference the lease holds, if it was made from a handle; alive until <see cref="Dispose"/>.</summary>
    internal DmaBufHandle? Reference => _reference;

    /// <summary>Identity of the mapped buffer.</summary>
    public FileIdentity Identity => _region.Identity;

    /// <summary>Address of the first byte in this process.</summary>
    /// <exception cref="ObjectDisposedException">The lease was disposed.</exception>
    public nint Address
    {
        get
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
            return _region.Address;
        }
    }

    /// <summary>The bytes from <paramref name="offset"/>, <paramref name="length"/> long, in place.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is outside the buffer.</exception>
    /// <exception cref="ObjectDisposedException">The lease was disposed.</exception>
    public Span<byte> GetSpan(long offset, int length)
    {
        CheckRange(offset, length);
        return new Span<byte>((byte*)Address + offset, length);
    }

    /// <summary>The whole buffer in place; buffers over 2 GiB need <see cref="GetSpan"/>.</summary>
    /// <exception cref="InvalidOperationException">The buffer is larger than a span can be.</exception>
    public Span<byte> Span => Length <= int.MaxValue
        ? GetSpan(0, (int)Length)
        : throw new InvalidOperationException($"A {Length}-byte buffer does not fit one span; use GetSpan.");

    /// <inheritdoc/>
    public void Read(long offset, Span<byte> destination) => GetSpan(offset, destination.Length).CopyTo(destination);

    /// <inheritdoc/>
    public void Write(long offset, ReadOnlySpan<byte> source) => source.CopyTo(GetSpan(offset, source.Length));

    /// <summary>Gives the lease back; the mapping is unmapped if nothing else holds it.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _cache.Release(_region);
            _reference?.Dispose();
        }
    }

    /// <inheritdoc/>
    public override string ToString() => $"mapping of {Length} bytes at 0x{_region.Address:x} ({Identity})";

    private void CheckRange(long offset, int length)
    {
        if (offset < 0 || length < 0 || offset > Length - length)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"Range [{offset}, +{length}) is outside the {Length}-byte buffer.");
        }
    }
}

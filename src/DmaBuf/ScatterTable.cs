// Ownership: a ScatterTable is immutable once built. The exporter that returns one from Map owns the addresses in it
// until the matching Unmap; the table object itself is plain managed memory and needs no disposal.
using System.Runtime.InteropServices;

namespace DmaBuf;

/// <summary>One contiguous run of a scatter table: an address (physical or device) and a length in bytes.</summary>
/// <param name="Address">Start address of the run.</param>
/// <param name="Length">Length of the run in bytes; never zero in a built table.</param>
[StructLayout(LayoutKind.Sequential)]
public readonly record struct ScatterSegment(ulong Address, ulong Length)
{
    /// <summary>The first address past the end of the run.</summary>
    public ulong End => Address + Length;
}

/// <summary>
/// A list of address runs that together cover one buffer, in buffer order (<c>struct sg_table</c>). An exporter's
/// backing store is a table of physical runs; a mapping for a device is a table of device addresses.
/// </summary>
public sealed class ScatterTable
{
    private readonly ScatterSegment[] _segments;

    /// <summary>Builds a table from <paramref name="segments"/>, which are copied.</summary>
    /// <exception cref="ArgumentException">A segment has length zero, or the table is empty.</exception>
    public ScatterTable(ReadOnlySpan<ScatterSegment> segments)
        : this(segments.ToArray(), validate: true)
    {
    }

    private ScatterTable(ScatterSegment[] segments, bool validate)
    {
        if (validate)
        {
            if (segments.Length == 0)
            {
                throw new ArgumentException("A scatter table needs at least one segment.", nameof(segments));
            }

            foreach (ScatterSegment s in segments)
            {
                if (s.Length == 0)
                {
                    throw new ArgumentException($"Segment at 0x{s.Address:x} has length zero.", nameof(segments));
                }
            }
        }

        _segments = segments;
        ulong total = 0;
        foreach (ScatterSegment s in segments)
        {
            total += s.Length;
        }

        TotalLength = total;
    }

    /// <summary>Builds a table with one run.</summary>
    public static ScatterTable Single(ulong address, ulong length)
    {
        if (length == 0)
        {
            throw new ArgumentOutOfRangeException(nameof(length), "A segment cannot have length zero.");
        }

        return new ScatterTable([new ScatterSegment(address, length)], validate: false);
    }

    /// <summary>Takes ownership of <paramref name="segments"/> without copying; the caller must not change it.</summary>
    public static ScatterTable FromOwnedArray(ScatterSegment[] segments) => new(segments, validate: true);

    /// <summary>The runs, in buffer order.</summary>
    public ReadOnlySpan<ScatterSegment> Segments => _segments;

    /// <summary>Number of runs.</summary>
    public int Count => _segments.Length;

    /// <summary>Sum of all run lengths in bytes.</summary>
    public ulong TotalLength { get; }

    /// <summary>
    /// Runs with physically adjacent neighbours merged, as <c>iommu_map_sg</c> does before it maps: a contiguous pair
    /// of chunks becomes one run, which lets a large page or block cover it.
    /// </summary>
    public ScatterTable Coalesced()
    {
        int merged = 1;
        for (int i = 1; i < _segments.Length; i++)
        {
            if (_segments[i].Address != _segments[i - 1].End)
            {
                merged++;
            }
        }

        if (merged == _segments.Length)
        {
            return this;
        }

        var result = new ScatterSegment[merged];
        int n = 0;
        result[0] = _segments[0];
        for (int i = 1; i < _segments.Length; i++)
        {
            ScatterSegment s = _segments[i];
            if (s.Address == result[n].End)
            {
                result[n] = result[n] with { Length = result[n].Length + s.Length };
            }
            else
            {
                result[++n] = s;
            }
        }

        return new ScatterTable(result, validate: false);
    }

    /// <summary>
    /// The addresses that hold bytes [<paramref name="offset"/>, <paramref name="offset"/> + <paramref name="length"/>)
    /// of the buffer, as runs in buffer order.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside the table.</exception>
    public ScatterSegment[] GetRange(ulong offset, ulong length)
    {
        if (offset > TotalLength || length > TotalLength - offset)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"Bytes {offset}+{length} are outside a {TotalLength}-byte table.");
        }

        var runs = new List<ScatterSegment>();
        ulong start = 0;
        ulong want = offset, end = offset + length;
        foreach (ScatterSegment s in _segments)
        {
            if (want == end)
            {
                break;
            }

            ulong segEnd = start + s.Length;
            if (want < segEnd)
            {
                ulong n = Math.Min(segEnd, end) - want;
                runs.Add(new ScatterSegment(s.Address + (want - start), n));
                want += n;
            }

            start = segEnd;
        }

        return [.. runs];
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Count} segment(s), {TotalLength} bytes";
}

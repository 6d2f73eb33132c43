using BenchmarkDotNet.Attributes;
using DmaBuf.Simulation;
using DmaBuf.Simulation.Tests;

namespace DmaBuf.Benchmarks;

/// <summary>
/// One allocate and free of an uncached size (above 32 pages, so the per-size cache does not hide the tree) with 100,
/// 10,000 or 1,000,000 ranges of 64 pages already live, on the tree allocator, on the sorted-array allocator it
/// replaced (the baseline: the same file the tests use as the reference model) and on the tree as it was before its
/// nodes kept per-order best fits (<see cref="WidestGapIovaAllocator"/>). Layouts:
/// <list type="bullet">
/// <item><c>Packed</c>: the live ranges fill the top of the space with no gap; 100 pages land below all of them.</item>
/// <item><c>Fragmented</c>: 2N ranges allocated and every other one freed, leaving N holes of 64 pages; 100 pages fit none
/// of them and land below all of them.</item>
/// <item><c>NearMiss</c>: holes of 128 pages, each starting at an odd multiple of 64, one per two live ranges; a
/// 65-page request is aligned to 128, so every hole is wide enough but none holds an aligned slot. The widest-gap tree
/// has to look at each of them; the per-order best fits rule them all out at the root.</item>
/// </list>
/// Setup allocates through both trees, loads the same ranges into the sorted array and checks that all three place the
/// request on the same pfn.
/// </summary>
[MemoryDiagnoser]
public class IovaAllocatorBenchmark
{
    /// <summary>The shape of the live ranges.</summary>
    public enum Shape
    {
        /// <summary>No gaps between the live ranges.</summary>
        Packed,

        /// <summary>A 64-page hole after every live range, too narrow for the request.</summary>
        Fragmented,

        /// <summary>Holes wide enough for the request whose aligned slot never fits.</summary>
        NearMiss,
    }

    private const ulong Limit = 1UL << 36; // a 48-bit IOVA space in pages, as IommuDomain builds it
    private const ulong RangePages = 64;

    private IovaAllocator _tree = null!;
    private SortedArrayIovaAllocator _sortedArray = null!;
    private WidestGapIovaAllocator _widestGap = null!;
    private ulong _request;

    /// <summary>Ranges live before each operation.</summary>
    [Params(100, 10_000, 1_000_000)]
    public int LiveRanges { get; set; }

    /// <summary>The layout of the live ranges.</summary>
    [Params(Shape.Packed, Shape.Fragmented, Shape.NearMiss)]
    public Shape Layout { get; set; }

    /// <summary>Builds both allocators in the same state.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _tree = new IovaAllocator(1, Limit);
        _sortedArray = new SortedArrayIovaAllocator(1, Limit);
        _widestGap = new WidestGapIovaAllocator(1, Limit);
        int allocated = Layout switch
        {
            Shape.Packed => LiveRanges,
            _ => 2 * LiveRanges,
        };
        var pfns = new ulong[allocated];
        for (int i = 0; i < allocated; i++)
        {
            if (!_tree.TryAllocate(RangePages, out pfns[i], out _) || !_widestGap.TryAllocate(RangePages, out ulong same, out _) || same != pfns[i])
            {
                throw new InvalidOperationException("benchmark space too small");
            }
        }

        var live = new List<ulong>(LiveRanges);
        for (int i = 0; i < allocated; i++)
        {
            bool free = Layout switch
            {
                Shape.Fragmented => i % 2 == 1,
                Shape.NearMiss => i % 4 is 1 or 2, // pairs of 64-page ranges starting at odd multiples of 64
                _ => false,
            };
            if (free)
            {
                _tree.Free(pfns[i], RangePages);
                _widestGap.Free(pfns[i], RangePages);
            }
            else
            {
                live.Add(pfns[i]);
            }
        }

        live.Sort();
        foreach (ulong pfn in live)
        {
            _sortedArray.AddAbove(pfn, RangePages);
        }

        _request = Layout == Shape.NearMiss ? 65UL : 100UL;
        if (!_tree.TryAllocate(_request, out ulong treePfn, out _) || !_sortedArray.TryAllocate(_request, out ulong arrayPfn, out _) || treePfn != arrayPfn
            || !_widestGap.TryAllocate(_request, out ulong widestGapPfn, out _) || widestGapPfn != treePfn)
        {
            throw new InvalidOperationException("the allocators disagree");
        }

        _tree.Free(treePfn, _request);
        _sortedArray.Free(arrayPfn, _request);
        _widestGap.Free(widestGapPfn, _request);
        Console.WriteLine($"// {Layout}: {_tree.RangesInTree} live ranges, request of {_request} pages lands at pfn 0x{treePfn:x}; tree: {_tree.BytesPerRange} bytes per range");
    }

    /// <summary>The allocator the tests check against, as it was before the tree.</summary>
    [Benchmark(Baseline = true)]
    public void SortedArray()
    {
        _sortedArray.TryAllocate(_request, out ulong pfn, out _);
        _sortedArray.Free(pfn, _request);
    }

    /// <summary>The treap as it was, with widest-gap summaries only.</summary>
    [Benchmark]
    public void WidestGapTree()
    {
        _widestGap.TryAllocate(_request, out ulong pfn, out _);
        _widestGap.Free(pfn, _request);
    }

    /// <summary>The treap with per-order best-fit summaries, as the simulation uses it.</summary>
    [Benchmark]
    public void Tree()
    {
        _tree.TryAllocate(_request, out ulong pfn, out _);
        _tree.Free(pfn, _request);
    }
}

using System.Numerics;
using CsCheck;

namespace DmaBuf.Simulation.Tests;

/// <summary>
/// The tree allocator against the sorted-array allocator it replaced: random allocate and free sequences in small
/// spaces (so requests fail, gaps fragment and alignment defeats gaps that are wide enough) must give the same pfn, the
/// same failures, the same cache hits and the same range counts at every step. CsCheck shrinks a failing sequence.
/// </summary>
public sealed class IovaAllocatorModelTests
{
    private static readonly long Iterations =
        long.TryParse(Environment.GetEnvironmentVariable("DMABUF_IOVA_ITERATIONS"), out long n) && n > 0 ? n : 2_000;

    // An operation: free when Free, else allocate Pages; Pick chooses which live range to free.
    private readonly record struct Op(bool Free, ulong Pages, int Pick)
    {
        public override string ToString() => Free ? $"free #{Pick}" : $"alloc {Pages}";
    }

    private static readonly Gen<ulong> s_pages = Gen.OneOf(Gen.ULong[1, 32], Gen.ULong[33, 300], Gen.Const(64UL), Gen.Const(65UL));

    private static readonly Gen<Op> s_op = Gen.Select(Gen.Int[0, 9], s_pages, Gen.Int[0, 1 << 20])
        .Select(t => new Op(t.Item1 < 4, t.Item2, t.Item3));

    [Fact]
    public void TryAllocateAndFree_RandomSequences_MatchTheSortedArrayAllocator()
    {
        Gen.Select(Gen.ULong[2, 40], Gen.ULong[64, 8192], s_op.Array[1, 300])
            .Sample((start, limit, ops) => Run(start, limit, ops), iter: Iterations, threads: 1,
                seed: Environment.GetEnvironmentVariable("DMABUF_IOVA_SEED"));
    }

    // Enough frees of one small size to fill the magazines and the depot, so overflowing ranges go back to the tree.
    [Fact]
    public void TryAllocateAndFree_CacheOverflow_MatchesTheSortedArrayAllocator()
    {
        Gen.Select(Gen.Int[4000, 6000], Gen.Int[0, 5]).Sample(
            (count, order) =>
            {
                var ops = new List<Op>();
                for (int i = 0; i < count; i++)
                {
                    ops.Add(new Op(false, 1UL << order, 0));
                }

                for (int i = 0; i < count; i++)
                {
                    ops.Add(new Op(true, 0, i * 7919));
                    if (i % 3 == 0)
                    {
                        ops.Add(new Op(false, 100 + (ulong)i % 50, 0));
                    }
                }

                Run(1, 1UL << 20, [.. ops]);
            },
            iter: 20, threads: 1);
    }

    // Near misses on purpose: a row of ranges of one uncached size (above 32 pages, so frees reach the tree) allocated
    // top-down, some of them freed again, leaves holes that start at every offset from the alignment of what follows, so
    // requests a little above the row's size (aligned to the next power of two) often meet holes wide enough for them
    // whose aligned slot falls short, the case the per-order fits answer.
    [Fact]
    public void TryAllocateAndFree_NearMissHoles_MatchTheSortedArrayAllocator()
    {
        Gen<Row> row = Gen.Select(Gen.ULong[1, 40], Gen.ULong[33, 160], Gen.Int[4, 128], Gen.ULong, Gen.ULong, Gen.ULong[0, 300])
            .Select(t => new Row(t.Item1, t.Item2, t.Item3, new UInt128(t.Item4, t.Item5), t.Item6));
        Gen<Op> op = Gen.Select(Gen.Int[0, 9], Gen.OneOf(Gen.ULong[1, 32], Gen.ULong[33, 700]), Gen.Int[0, 1 << 20])
            .Select(t => new Op(t.Item1 < 3, t.Item2, t.Item3));
        Gen.Select(row, op.Array[1, 100])
            .Sample((r, ops) =>
            {
                ulong align = BitOperations.RoundUpToPowerOf2(r.Pages);
                var pair = new Pair(r.Start, r.Start + ((ulong)(r.Count + 1) * align) + r.Extra);
                for (int i = 0; i < r.Count; i++)
                {
                    pair.Allocate(r.Pages, $"row alloc {i}");
                }

                // Live is in allocation order, so bit i frees the i-th range from the top; go down so indices hold.
                for (int i = pair.Live.Count - 1; i >= 0; i--)
                {
                    if (((r.FreeMask >> i) & 1) != 0)
                    {
                        pair.FreeAt(i, $"row free {i}");
                    }
                }

                pair.Apply(ops);
            }, iter: Iterations, threads: 1, seed: Environment.GetEnvironmentVariable("DMABUF_IOVA_SEED"));
    }

    private static void Run(ulong start, ulong limit, Op[] ops) => new Pair(start, limit).Apply(ops);

    // A row of Count ranges of Pages each, those whose bit is set in FreeMask freed again, in [Start, enough + Extra).
    private readonly record struct Row(ulong Start, ulong Pages, int Count, UInt128 FreeMask, ulong Extra)
    {
        public override string ToString() => $"start {Start}, {Count} x {Pages} pages, freed 0x{FreeMask:x}, extra {Extra}";
    }

    // The allocator and its model in the same state, with the ranges live in both; every call compares the two.
    private sealed class Pair(ulong start, ulong limit)
    {
        private readonly IovaAllocator _actual = new(start, limit);
        private readonly SortedArrayIovaAllocator _model = new(start, limit);

        public List<(ulong Pfn, ulong Pages)> Live { get; } = [];

        public void Apply(Op[] ops)
        {
            for (int step = 0; step < ops.Length; step++)
            {
                Op op = ops[step];
                if (!op.Free)
                {
                    Allocate(op.Pages, $"step {step} ({op})");
                }
                else if (Live.Count != 0)
                {
                    // Swap the chosen range to the end so frees stay O(1) in long sequences.
                    int index = op.Pick % Live.Count;
                    (Live[index], Live[^1]) = (Live[^1], Live[index]);
                    FreeAt(Live.Count - 1, $"step {step} ({op})");
                }
            }
        }

        public void Allocate(ulong pages, string what)
        {
            bool ok = _actual.TryAllocate(pages, out ulong pfn, out bool hit);
            bool expectedOk = _model.TryAllocate(pages, out ulong expectedPfn, out bool expectedHit);
            if (ok != expectedOk || pfn != expectedPfn || hit != expectedHit)
            {
                throw new InvalidOperationException(
                    $"{what}: tree gave ok={ok} pfn=0x{pfn:x} hit={hit}, sorted array ok={expectedOk} pfn=0x{expectedPfn:x} hit={expectedHit}");
            }

            if (ok)
            {
                Live.Add((pfn, pages));
            }

            CheckCounts(what);
        }

        public void FreeAt(int index, string what)
        {
            (ulong pfn, ulong pages) = Live[index];
            Live.RemoveAt(index);
            _actual.Free(pfn, pages);
            _model.Free(pfn, pages);
            CheckCounts(what);
        }

        private void CheckCounts(string what)
        {
            if (_actual.RangesInTree != _model.RangesInTree || _actual.CachedRanges != _model.CachedRanges)
            {
                throw new InvalidOperationException(
                    $"{what}: tree holds {_actual.RangesInTree} ({_actual.CachedRanges} cached), sorted array {_model.RangesInTree} ({_model.CachedRanges} cached)");
            }
        }
    }
}

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

    private static void Run(ulong start, ulong limit, Op[] ops)
    {
        var actual = new IovaAllocator(start, limit);
        var model = new SortedArrayIovaAllocator(start, limit);
        var live = new List<(ulong Pfn, ulong Pages)>();
        for (int step = 0; step < ops.Length; step++)
        {
            Op op = ops[step];
            if (op.Free)
            {
                if (live.Count == 0)
                {
                    continue;
                }

                int index = op.Pick % live.Count;
                (ulong pfn, ulong pages) = live[index];
                live[index] = live[^1];
                live.RemoveAt(live.Count - 1);
                actual.Free(pfn, pages);
                model.Free(pfn, pages);
            }
            else
            {
                bool ok = actual.TryAllocate(op.Pages, out ulong pfn, out bool hit);
                bool expectedOk = model.TryAllocate(op.Pages, out ulong expectedPfn, out bool expectedHit);
                if (ok != expectedOk || pfn != expectedPfn || hit != expectedHit)
                {
                    throw new InvalidOperationException(
                        $"step {step} ({op}): tree gave ok={ok} pfn=0x{pfn:x} hit={hit}, sorted array ok={expectedOk} pfn=0x{expectedPfn:x} hit={expectedHit}");
                }

                if (ok)
                {
                    live.Add((pfn, op.Pages));
                }
            }

            if (actual.RangesInTree != model.RangesInTree || actual.CachedRanges != model.CachedRanges)
            {
                throw new InvalidOperationException(
                    $"step {step} ({op}): tree holds {actual.RangesInTree} ({actual.CachedRanges} cached), sorted array {model.RangesInTree} ({model.CachedRanges} cached)");
            }
        }
    }
}

using System.Numerics;

namespace DmaBuf.Simulation.Tests;

// The IOVA allocator as it was before the tree: allocated ranges in sorted arrays, O(n) insert and remove, and a linear
// top-down gap walk. Kept as the reference model of IovaAllocatorModelTests and as the baseline of the allocator
// benchmark (bench/DmaBuf.Benchmarks links this file). Its behaviour:
// - one contiguous range per request, allocated top-down below a limit (the highest free range that fits);
// - every range is aligned to the power of two at or above its size; requests of up to 32 pages are also rounded up to
//   that power of two, and served from a per-size cache before the tree;
// - the cache is a pair of magazines (loaded, previous) of 127 ranges per size plus a depot of full magazines, as the
//   per-CPU rcache (one CPU: the simulation is single-threaded). Cached ranges stay allocated in the tree, as in Linux.
// Not thread-safe: the owning domain holds its lock.
internal sealed class SortedArrayIovaAllocator
{
    public const int CachedOrders = 6;            // sizes 1, 2, 4, 8, 16, 32 pages (IOVA_RANGE_CACHE_MAX_SIZE)
    public const ulong MaxCachedPages = 1UL << (CachedOrders - 1);
    public const int MagazineSize = 127;          // IOVA_MAG_SIZE
    public const int MaxDepotMagazines = 32;      // MAX_GLOBAL_MAGS before the depot became unbounded

    private readonly ulong _startPfn;
    private readonly ulong _limitPfn;
    private readonly SizeCache[] _caches = new SizeCache[CachedOrders];

    // Allocated ranges (cached ones included), sorted by start: [lo, hi] inclusive.
    private ulong[] _lo = new ulong[16];
    private ulong[] _hi = new ulong[16];
    private int _count;

    /// <summary>Creates an allocator of page frame numbers in [<paramref name="startPfn"/>, <paramref name="limitPfn"/>).</summary>
    public SortedArrayIovaAllocator(ulong startPfn, ulong limitPfn)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(startPfn, limitPfn);
        _startPfn = startPfn;
        _limitPfn = limitPfn;
        for (int i = 0; i < CachedOrders; i++)
        {
            _caches[i] = new SizeCache();
        }
    }

    /// <summary>Ranges held in the tree, those parked in the cache included.</summary>
    public int RangesInTree => _count;

    /// <summary>Ranges parked in the per-size caches.</summary>
    public int CachedRanges
    {
        get
        {
            int n = 0;
            foreach (SizeCache c in _caches)
            {
                n += c.Count;
            }

            return n;
        }
    }

    /// <summary>The pages a request of <paramref name="pages"/> really occupies.</summary>
    public static ulong AllocatedSize(ulong pages) => pages <= MaxCachedPages ? BitOperations.RoundUpToPowerOf2(pages) : pages;

    /// <summary>Allocates a range of at least <paramref name="pages"/> pages.</summary>
    /// <param name="pages">Pages needed; at least 1.</param>
    /// <param name="pfn">First page frame number of the range.</param>
    /// <param name="cacheHit">Whether the per-size cache served the request.</param>
    /// <returns>False when the space below the limit has no room.</returns>
    public bool TryAllocate(ulong pages, out ulong pfn, out bool cacheHit)
    {
        ArgumentOutOfRangeException.ThrowIfZero(pages);
        if (pages <= MaxCachedPages)
        {
            ulong size = BitOperations.RoundUpToPowerOf2(pages);
            if (_caches[BitOperations.Log2(size)].TryGet(out pfn))
            {
                cacheHit = true;
                return true;
            }

            cacheHit = false;
            return TryAllocateFromTree(size, size, out pfn);
        }

        cacheHit = false;
        return TryAllocateFromTree(pages, BitOperations.RoundUpToPowerOf2(pages), out pfn);
    }

    /// <summary>Frees a range returned by <see cref="TryAllocate"/> for the same <paramref name="pages"/>.</summary>
    /// <exception cref="InvalidOperationException">No such range is allocated.</exception>
    public void Free(ulong pfn, ulong pages)
    {
        ulong size = AllocatedSize(pages);
        int index = Find(pfn);
        if (index < 0 || _hi[index] != pfn + size - 1)
        {
            throw new InvalidOperationException($"IOVA pfn 0x{pfn:x} ({pages} pages) is not an allocated range.");
        }

        if (pages <= MaxCachedPages)
        {
            SizeCache cache = _caches[BitOperations.Log2(size)];
            if (cache.TryPut(pfn, out ulong[]? overflow, out int overflowCount))
            {
                return;
            }

            // The depot is full: the loaded magazine's ranges go back to the tree (iova_magazine_free_pfns).
            for (int i = 0; i < overflowCount; i++)
            {
                RemoveAt(Find(overflow![i]));
            }

            cache.PutAfterOverflow(pfn);
            return;
        }

        RemoveAt(index);
    }

    /// <summary>
    /// Adds a range above every range held, as if allocated: lets a benchmark build a million-range state without a
    /// million O(n) inserts at the front.
    /// </summary>
    public void AddAbove(ulong pfn, ulong pages)
    {
        ulong size = AllocatedSize(pages);
        if (pfn < _startPfn || pfn + size > _limitPfn || (_count > 0 && pfn <= _hi[_count - 1]))
        {
            throw new InvalidOperationException($"IOVA pfn 0x{pfn:x} ({pages} pages) is not above every range held.");
        }

        Insert(_count, pfn, pfn + size - 1);
    }

    private bool TryAllocateFromTree(ulong size, ulong align, out ulong pfn)
    {
        // Walk the gaps from the top down and take the highest aligned slot that fits.
        ulong high = _limitPfn; // exclusive end of the gap
        for (int i = _count - 1; i >= -1; i--)
        {
            ulong low = i >= 0 ? _hi[i] + 1 : _startPfn;
            if (high >= size)
            {
                ulong candidate = (high - size) & ~(align - 1);
                if (candidate >= low)
                {
                    Insert(i + 1, candidate, candidate + size - 1);
                    pfn = candidate;
                    return true;
                }
            }

            if (i >= 0)
            {
                high = _lo[i];
            }
        }

        pfn = 0;
        return false;
    }

    private int Find(ulong lo)
    {
        int index = Array.BinarySearch(_lo, 0, _count, lo);
        return index >= 0 ? index : -1;
    }

    private void Insert(int index, ulong lo, ulong hi)
    {
        if (_count == _lo.Length)
        {
            Array.Resize(ref _lo, _count * 2);
            Array.Resize(ref _hi, _count * 2);
        }

        Array.Copy(_lo, index, _lo, index + 1, _count - index);
        Array.Copy(_hi, index, _hi, index + 1, _count - index);
        _lo[index] = lo;
        _hi[index] = hi;
        _count++;
    }

    private void RemoveAt(int index)
    {
        _count--;
        Array.Copy(_lo, index + 1, _lo, index, _count - index);
        Array.Copy(_hi, index + 1, _hi, index, _count - index);
    }

    private sealed class Magazine
    {
        public readonly ulong[] Pfns = new ulong[MagazineSize];
        public int Size;

        public bool IsFull => Size == MagazineSize;
    }

    // One size class of the range cache: loaded and previous magazines plus a bounded depot of full ones.
    private sealed class SizeCache
    {
        private readonly Stack<Magazine> _depot = new();
        private Magazine _loaded = new();
        private Magazine _previous = new();

        public int Count
        {
            get
            {
                int n = _loaded.Size + _previous.Size;
                foreach (Magazine m in _depot)
                {
                    n += m.Size;
                }

                return n;
            }
        }

        public bool TryGet(out ulong pfn)
        {
            if (_loaded.Size == 0)
            {
                if (_previous.Size != 0)
                {
                    (_loaded, _previous) = (_previous, _loaded);
                }
                else if (_depot.Count != 0)
                {
                    _loaded = _depot.Pop(); // the empty loaded magazine is dropped
                }
                else
                {
                    pfn = 0;
                    return false;
                }
            }

            pfn = _loaded.Pfns[--_loaded.Size];
            return true;
        }

        // False when the caller must free the returned ranges to the tree and then call PutAfterOverflow.
        public bool TryPut(ulong pfn, out ulong[]? overflow, out int overflowCount)
        {
            overflow = null;
            overflowCount = 0;
            if (_loaded.IsFull)
            {
                if (!_previous.IsFull)
                {
                    (_loaded, _previous) = (_previous, _loaded);
                }
                else if (_depot.Count < MaxDepotMagazines)
                {
                    _depot.Push(_loaded);
                    _loaded = new Magazine();
                }
                else
                {
                    overflow = _loaded.Pfns;
                    overflowCount = _loaded.Size;
                    return false;
                }
            }

            _loaded.Pfns[_loaded.Size++] = pfn;
            return true;
        }

        public void PutAfterOverflow(ulong pfn)
        {
            _loaded.Size = 0;
            _loaded.Pfns[_loaded.Size++] = pfn;
        }
    }
}

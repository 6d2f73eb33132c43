using System.Diagnostics;
using System.Numerics;

namespace DmaBuf.Benchmarks;

// The IOVA tree allocator as it was before its nodes kept per-order best fits (src/DmaBuf.Simulation/Hardware/
// IovaAllocator.cs at commit a806303, renamed): a treap whose nodes summarise only the lowest start, highest end and
// widest gap of their subtree. A gap wide enough for a request but whose aligned slot falls short has to be checked one
// by one, so a layout of such near misses makes allocation linear. Kept as a baseline of IovaAllocatorBenchmark, to
// show in one run what the summaries cost insert and remove and what they save on near misses. Behaviour (and so every
// pfn) is the same as the current allocator's and the sorted-array model's.
// Not thread-safe.
internal sealed class WidestGapIovaAllocator
{
    public const int CachedOrders = 6;            // sizes 1, 2, 4, 8, 16, 32 pages (IOVA_RANGE_CACHE_MAX_SIZE)
    public const ulong MaxCachedPages = 1UL << (CachedOrders - 1);
    public const int MagazineSize = 127;          // IOVA_MAG_SIZE
    public const int MaxDepotMagazines = 32;      // MAX_GLOBAL_MAGS before the depot became unbounded

    private readonly ulong _startPfn;
    private readonly ulong _limitPfn;
    private readonly SizeCache[] _caches = new SizeCache[CachedOrders];

    // Allocated ranges (cached ones included), [lo, hi] inclusive, in a treap keyed by lo whose nodes live in one array
    // (index 0 is the empty tree; removed nodes go on a free list linked through Left, so steady state allocates nothing).
    private const int Nil = 0;
    private Node[] _nodes = new Node[16];
    private int _root = Nil;
    private int _freeList = Nil;
    private int _used = 1;
    private int _count;
    private uint _seed = 0x9E3779B9;

    /// <summary>Creates an allocator of page frame numbers in [<paramref name="startPfn"/>, <paramref name="limitPfn"/>).</summary>
    public WidestGapIovaAllocator(ulong startPfn, ulong limitPfn)
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
        int node = Find(pfn);
        if (node == Nil || _nodes[node].Hi != pfn + size - 1)
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
                Remove(overflow![i]);
            }

            cache.PutAfterOverflow(pfn);
            return;
        }

        Remove(pfn);
    }

    private bool TryAllocateFromTree(ulong size, ulong align, out ulong pfn)
    {
        // The gaps in descending address order: above the highest range, between ranges (in the tree), below the
        // lowest range. The first one whose highest aligned slot fits wins, as a top-down walk would find it.
        bool found;
        if (_root == Nil)
        {
            found = TryPlace(_startPfn, _limitPfn, size, align, out pfn);
        }
        else
        {
            ref Node root = ref _nodes[_root];
            found = TryPlace(root.MaxHi + 1, _limitPfn, size, align, out pfn)
                || (root.MaxGap >= size && TrySearch(_root, size, align, out pfn))
                || TryPlace(_startPfn, root.MinLo, size, align, out pfn);
        }

        if (found)
        {
            Insert(pfn, pfn + size - 1);
            return true;
        }

        pfn = 0;
        return false;
    }

    // The highest slot of the gap [low, high) aligned to align that holds size pages.
    private static bool TryPlace(ulong low, ulong high, ulong size, ulong align, out ulong pfn)
    {
        if (high >= size)
        {
            pfn = (high - size) & ~(align - 1);
            if (pfn >= low)
            {
                return true;
            }
        }

        pfn = 0;
        return false;
    }

    // The gaps inside subtree t, highest first, skipping subtrees whose widest gap is narrower than size. A gap at least
    // size + align - 1 wide always fits, so the walk stops at the first such gap; narrower ones are checked exactly.
    private bool TrySearch(int t, ulong size, ulong align, out ulong pfn)
    {
        ref Node n = ref _nodes[t];
        if (n.Right != Nil)
        {
            ref Node r = ref _nodes[n.Right];
            if ((r.MaxGap >= size && TrySearch(n.Right, size, align, out pfn)) || TryPlace(n.Hi + 1, r.MinLo, size, align, out pfn))
            {
                return true;
            }
        }

        if (n.Left != Nil)
        {
            ref Node l = ref _nodes[n.Left];
            if (TryPlace(l.MaxHi + 1, n.Lo, size, align, out pfn) || (l.MaxGap >= size && TrySearch(n.Left, size, align, out pfn)))
            {
                return true;
            }
        }

        pfn = 0;
        return false;
    }

    private int Find(ulong lo)
    {
        int t = _root;
        while (t != Nil)
        {
            ref Node n = ref _nodes[t];
            if (lo == n.Lo)
            {
                return t;
            }

            t = lo < n.Lo ? n.Left : n.Right;
        }

        return Nil;
    }

    private void Insert(ulong lo, ulong hi)
    {
        int n = NewNode(lo, hi);
        Split(_root, lo, out int below, out int above);
        _root = Merge(Merge(below, n), above);
        _count++;
        AssertInvariants();
    }

    private void Remove(ulong lo)
    {
        _root = Remove(_root, lo);
        _count--;
        AssertInvariants();
    }

    private int Remove(int t, ulong lo)
    {
        ref Node n = ref _nodes[t];
        if (lo == n.Lo)
        {
            int merged = Merge(n.Left, n.Right);
            n.Left = _freeList;
            _freeList = t;
            return merged;
        }

        if (lo < n.Lo)
        {
            n.Left = Remove(n.Left, lo);
        }
        else
        {
            n.Right = Remove(n.Right, lo);
        }

        Update(t);
        return t;
    }

    // Splits t into the ranges starting below lo and the rest.
    private void Split(int t, ulong lo, out int below, out int above)
    {
        if (t == Nil)
        {
            below = above = Nil;
            return;
        }

        ref Node n = ref _nodes[t];
        if (n.Lo < lo)
        {
            Split(n.Right, lo, out int right, out above);
            n.Right = right;
            below = t;
        }
        else
        {
            Split(n.Left, lo, out below, out int left);
            n.Left = left;
            above = t;
        }

        Update(t);
    }

    // Joins two treaps where every range of a lies below every range of b.
    private int Merge(int a, int b)
    {
        if (a == Nil)
        {
            return b;
        }

        if (b == Nil)
        {
            return a;
        }

        if (_nodes[a].Priority > _nodes[b].Priority)
        {
            _nodes[a].Right = Merge(_nodes[a].Right, b);
            Update(a);
            return a;
        }

        _nodes[b].Left = Merge(a, _nodes[b].Left);
        Update(b);
        return b;
    }

    // Recomputes t's subtree summary from its children.
    private void Update(int t)
    {
        ref Node n = ref _nodes[t];
        ulong gap = 0;
        if (n.Left != Nil)
        {
            ref Node l = ref _nodes[n.Left];
            n.MinLo = l.MinLo;
            gap = Math.Max(l.MaxGap, n.Lo - l.MaxHi - 1);
        }
        else
        {
            n.MinLo = n.Lo;
        }

        if (n.Right != Nil)
        {
            ref Node r = ref _nodes[n.Right];
            n.MaxHi = r.MaxHi;
            gap = Math.Max(gap, Math.Max(r.MaxGap, r.MinLo - n.Hi - 1));
        }
        else
        {
            n.MaxHi = n.Hi;
        }

        n.MaxGap = gap;
    }

    private int NewNode(ulong lo, ulong hi)
    {
        int t = _freeList;
        if (t != Nil)
        {
            _freeList = _nodes[t].Left;
        }
        else
        {
            if (_used == _nodes.Length)
            {
                Array.Resize(ref _nodes, _nodes.Length * 2);
            }

            t = _used++;
        }

        // xorshift32: priorities only shape the tree, never the result.
        _seed ^= _seed << 13;
        _seed ^= _seed >> 17;
        _seed ^= _seed << 5;
        _nodes[t] = new Node { Lo = lo, Hi = hi, MinLo = lo, MaxHi = hi, Priority = _seed };
        return t;
    }

    [Conditional("DEBUG")]
    private void AssertInvariants()
    {
        // Checking the whole tree on every change would make debug builds quadratic; small trees are checked in full.
        if (_count <= 64)
        {
            Debug.Assert(Check(_root, out _) == _count);
        }
    }

    private int Check(int t, out ulong maxGap)
    {
        maxGap = 0;
        if (t == Nil)
        {
            return 0;
        }

        ref Node n = ref _nodes[t];
        int count = 1 + Check(n.Left, out ulong leftGap) + Check(n.Right, out ulong rightGap);
        Debug.Assert(n.Lo <= n.Hi && n.Lo >= _startPfn && n.Hi < _limitPfn);
        Debug.Assert(n.Left == Nil || (_nodes[n.Left].MaxHi < n.Lo && _nodes[n.Left].Priority <= n.Priority));
        Debug.Assert(n.Right == Nil || (_nodes[n.Right].MinLo > n.Hi && _nodes[n.Right].Priority <= n.Priority));
        ulong gap = Math.Max(leftGap, rightGap);
        if (n.Left != Nil)
        {
            gap = Math.Max(gap, n.Lo - _nodes[n.Left].MaxHi - 1);
        }

        if (n.Right != Nil)
        {
            gap = Math.Max(gap, _nodes[n.Right].MinLo - n.Hi - 1);
        }

        Debug.Assert(gap == n.MaxGap);
        maxGap = gap;
        return count;
    }

    // One allocated range [Lo, Hi] and the summary of its subtree: the lowest start, the highest end and the widest gap
    // between two ranges inside it (the gaps at its edges belong to the parent).
    private struct Node
    {
        public ulong Lo;
        public ulong Hi;
        public ulong MinLo;
        public ulong MaxHi;
        public ulong MaxGap;
        public int Left;
        public int Right;
        public uint Priority;
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

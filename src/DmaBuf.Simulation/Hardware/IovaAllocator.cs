using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace DmaBuf.Simulation;

// An IOVA allocator with the behaviour of Linux's drivers/iommu/iova.c as used by dma-iommu (our own code):
// - one contiguous range per request, allocated top-down below a limit (the highest free range that fits);
// - every range is aligned to the power of two at or above its size; requests of up to 32 pages are also rounded up to
//   that power of two, and served from a per-size cache before the tree;
// - the cache is a pair of magazines (loaded, previous) of 127 ranges per size plus a depot of full magazines, as the
//   per-CPU rcache (one CPU: the simulation is single-threaded). Cached ranges stay allocated in the tree, as in Linux.
// The ranges live in a treap keyed by start, each node summarising its subtree: lowest start, highest end, widest gap
// between two of its ranges, and for every alignment order k a request can have, the best fit of order k among those
// gaps (fit_k of gap [lo, hi] = hi + 1 - alignUp(lo, 2^k), the most pages an aligned slot there can hold). A request of
// size s has order k with 2^(k-1) < s <= 2^k, so a subtree holds a slot for it exactly when its best fit_k >= s, and
// allocation walks down one path, highest gaps first, to the gap Linux's top-down rbtree walk would take: insert,
// remove and allocate are O(log n) expected whatever the layout, gaps that are wide enough but whose aligned slot falls
// short included. Orders are tracked up to 2^31 pages (uint); a larger request falls back on the widest-gap pruning,
// which can visit at most one subtree path per gap of 2^31 pages or more: (limit - start) / 2^31 of them.
// Not thread-safe: the owning domain holds its lock.
internal sealed class IovaAllocator
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

    // Node t's best fits, one uint per order, at [t * _stride, t * _stride + _orders): capped at 2^k (a request of order
    // k is never larger) and 0 when at most 2^(k-1) (it is always larger), so a compare with any such request is exact.
    // Row 0 (the empty tree) stays zero. _stride rounds _orders up to whole Vector256<uint>s for the recompute.
    private const int MaxTrackedOrders = 32;
    private static readonly uint[] s_filled = CreateFilledRows();
    private readonly int _orders;
    private readonly int _stride;
    private uint[] _fits;

    /// <summary>Creates an allocator of page frame numbers in [<paramref name="startPfn"/>, <paramref name="limitPfn"/>).</summary>
    public IovaAllocator(ulong startPfn, ulong limitPfn)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(startPfn, limitPfn);
        _startPfn = startPfn;
        _limitPfn = limitPfn;

        // A request larger than the space never fits, so orders above ceil(log2(limit - start)) are never asked about.
        ulong space = limitPfn - startPfn;
        _orders = space > 1UL << (MaxTrackedOrders - 1) ? MaxTrackedOrders : BitOperations.Log2(BitOperations.RoundUpToPowerOf2(space)) + 1;
        _stride = (_orders + Vector256<uint>.Count - 1) / Vector256<uint>.Count * Vector256<uint>.Count;
        _fits = new uint[_nodes.Length * _stride];
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

    /// <summary>Bytes each range in the tree takes: its node and its row of best fits (arrays grow by doubling).</summary>
    public int BytesPerRange => Unsafe.SizeOf<Node>() + (_stride * sizeof(uint));

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
            int order = BitOperations.Log2(align);
            found = TryPlace(root.MaxHi + 1, _limitPfn, size, align, out pfn)
                || (align != 0 && order < _orders
                    ? _fits[(_root * _stride) + order] >= size && Descend(_root, size, align, order, out pfn)
                    : root.MaxGap >= size && TrySearch(_root, size, align, out pfn))
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

    // The highest gap inside subtree t that holds an aligned slot, given that one does (t's best fit of this order is at
    // least size): at each node the right subtree if its best fit suffices, else the gap above the node, else the gap
    // below it, else the left subtree, which then must hold it. One path down, no backtracking.
    private bool Descend(int t, ulong size, ulong align, int order, out ulong pfn)
    {
        while (true)
        {
            ref Node n = ref _nodes[t];
            if (n.Right != Nil)
            {
                if (_fits[(n.Right * _stride) + order] >= size)
                {
                    t = n.Right;
                    continue;
                }

                if (TryPlace(n.Hi + 1, _nodes[n.Right].MinLo, size, align, out pfn))
                {
                    return true;
                }
            }

            if (n.Left == Nil)
            {
                throw new UnreachableException("IOVA tree summary promised a gap that no node holds.");
            }

            if (TryPlace(_nodes[n.Left].MaxHi + 1, n.Lo, size, align, out pfn))
            {
                return true;
            }

            t = n.Left;
        }
    }

    // Requests above the tracked orders (more than 2^31 pages): the gaps inside subtree t, highest first, skipping
    // subtrees whose widest gap is narrower than size and checking the others one by one.
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
        _root = Insert(_root, NewNode(lo, hi));
        _count++;
        AssertInvariants();
    }

    // Goes down to where the new node's priority places it and splits only the subtree below: the nodes above are
    // updated once each, where a split of the whole tree and two merges would update about three times as many.
    private int Insert(int t, int node)
    {
        if (t == Nil)
        {
            return node; // a leaf: NewNode set its summary
        }

        ref Node n = ref _nodes[t];
        ref Node added = ref _nodes[node];
        if (added.Priority > n.Priority)
        {
            Split(t, added.Lo, out added.Left, out added.Right);
            Update(node);
            return node;
        }

        if (added.Lo < n.Lo)
        {
            n.Left = Insert(n.Left, node);
        }
        else
        {
            n.Right = Insert(n.Right, node);
        }

        Update(t);
        return t;
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
        ulong lowerStart = 0, lowerWidth = 0, upperStart = 0, upperWidth = 0; // the gaps at this node's edges
        if (n.Left != Nil)
        {
            ref Node l = ref _nodes[n.Left];
            n.MinLo = l.MinLo;
            lowerStart = l.MaxHi + 1;
            lowerWidth = n.Lo - lowerStart;
            gap = Math.Max(l.MaxGap, lowerWidth);
        }
        else
        {
            n.MinLo = n.Lo;
        }

        if (n.Right != Nil)
        {
            ref Node r = ref _nodes[n.Right];
            n.MaxHi = r.MaxHi;
            upperStart = n.Hi + 1;
            upperWidth = r.MinLo - upperStart;
            gap = Math.Max(gap, Math.Max(r.MaxGap, upperWidth));
        }
        else
        {
            n.MaxHi = n.Hi;
        }

        n.MaxGap = gap;

        // Best fits: the children's (row 0, for a missing child, is zero), raised to the cap for every order the wider
        // edge gap fills wherever it starts (every stored fit is at most its cap), then the few exact orders of each.
        ref uint fits = ref MemoryMarshal.GetArrayDataReference(_fits);
        ref uint filled = ref MemoryMarshal.GetArrayDataReference(s_filled);
        nuint row = (nuint)t * (nuint)_stride;
        nuint left = (nuint)n.Left * (nuint)_stride;
        nuint right = (nuint)n.Right * (nuint)_stride;
        nuint full = (nuint)FullOrders(Math.Max(lowerWidth, upperWidth)) * MaxTrackedOrders;
        for (nuint i = 0; i < (nuint)_stride; i += (nuint)Vector256<uint>.Count)
        {
            Vector256<uint> children = Vector256.Max(Vector256.LoadUnsafe(ref fits, left + i), Vector256.LoadUnsafe(ref fits, right + i));
            Vector256.Max(children, Vector256.LoadUnsafe(ref filled, full + i)).StoreUnsafe(ref fits, row + i);
        }

        AddExactFits(ref Unsafe.Add(ref fits, row), lowerStart, lowerWidth);
        AddExactFits(ref Unsafe.Add(ref fits, row), upperStart, upperWidth);
    }

    // Orders 0 .. FullOrders(width) - 1 fit their cap 2^k in a gap of width pages wherever it starts: 2^(k+1) - 1 <= width.
    private int FullOrders(ulong width) => Math.Min(BitOperations.Log2(width + 1), _orders);

    // Raises the row's fits to the exact ones of the gap of width pages from lo for the orders above FullOrders(width)
    // that can matter: those with 2^(k-1) < width, at most two.
    private void AddExactFits(ref uint row, ulong lo, ulong width)
    {
        for (int k = FullOrders(width); k < _orders && (1UL << k) >> 1 < width; k++)
        {
            uint fit = Fit(lo, lo + width, k);
            ref uint stored = ref Unsafe.Add(ref row, k);
            if (fit > stored)
            {
                stored = fit;
            }
        }
    }

    // The stored fit of order k of the gap [low, high): capped at 2^k, 0 when at most 2^(k-1).
    private static uint Fit(ulong low, ulong high, int k)
    {
        ulong mask = (1UL << k) - 1;
        ulong start = (low + mask) & ~mask;
        ulong fit = start < high ? high - start : 0;
        return fit > mask ? (uint)(mask + 1) : fit > (mask + 1) >> 1 ? (uint)fit : 0;
    }

    // Row f (of MaxTrackedOrders) holds the cap 2^k for every order k below f and 0 above: what a gap whose first f
    // orders are full contributes to them.
    private static uint[] CreateFilledRows()
    {
        var rows = new uint[(MaxTrackedOrders + 1) * MaxTrackedOrders];
        for (int f = 0; f <= MaxTrackedOrders; f++)
        {
            for (int k = 0; k < f; k++)
            {
                rows[(f * MaxTrackedOrders) + k] = 1u << k;
            }
        }

        return rows;
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
                Array.Resize(ref _fits, _nodes.Length * _stride);
            }

            t = _used++;
        }

        // xorshift32: priorities only shape the tree, never the result.
        _seed ^= _seed << 13;
        _seed ^= _seed >> 17;
        _seed ^= _seed << 5;
        _nodes[t] = new Node { Lo = lo, Hi = hi, MinLo = lo, MaxHi = hi, Priority = _seed };
        _fits.AsSpan(t * _stride, _stride).Clear(); // a single range has no gap inside
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

        // The best fits against the formula applied to every order of the two gaps at this node's edges.
        for (int k = 0; k < _stride; k++)
        {
            uint expected = Math.Max(_fits[(n.Left * _stride) + k], _fits[(n.Right * _stride) + k]);
            if (k < _orders && n.Left != Nil)
            {
                expected = Math.Max(expected, Fit(_nodes[n.Left].MaxHi + 1, n.Lo, k));
            }

            if (k < _orders && n.Right != Nil)
            {
                expected = Math.Max(expected, Fit(n.Hi + 1, _nodes[n.Right].MinLo, k));
            }

            Debug.Assert(_fits[(t * _stride) + k] == expected);
        }

        return count;
    }

    // One allocated range [Lo, Hi] and the summary of its subtree: the lowest start, the highest end and the widest gap
    // between two ranges inside it (the gaps at its edges belong to the parent); its best fits are in _fits.
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

// Ownership: PhysicalMemory owns every page frame. TryAllocate/TryAllocateContiguous hand a block to the caller, who
// gives it back with the matching Free/FreeContiguous exactly once. Freeing does not always return the pages at once:
// a page a device can still reach (reach count > 0) stays FreePending until the IOMMU drops its reach (design rule 8).
// Hygiene (design rule 12): a block is zeroed when handed out, poisoned when it goes back, and the CPU caches over this
// memory drop their lines of it both times, so nothing of one owner is readable by the next.
using System.Diagnostics;

namespace DmaBuf.Simulation;

/// <summary>
/// Simulated DRAM: 4 KiB page frames with real bytes, a buddy allocator over most of it and a separate contiguous
/// (CMA-like) region. Freed pages are poisoned with <c>0x6b</c> and tracked, so a DMA or CPU access to a freed page is
/// counted in <see cref="SimStats.FreedPageAccesses"/> instead of being silently served.
/// </summary>
/// <remarks>
/// <para>
/// Memory starts at <see cref="BaseAddress"/> (as DRAM does on many arm64 SoCs), so physical address 0 and small
/// integers are never valid memory. Page frame numbers (pfns) are absolute: <c>pfn = address / PageSize</c>. The buddy
/// region comes first, the contiguous region after it.
/// </para>
/// <para>
/// Bytes are allocated lazily per 2 MiB chunk, on the first write, poison or <see cref="PageBytes"/> of a page in it.
/// Pages are handed out zeroed, as Linux's heaps hand them out (<c>__GFP_ZERO</c>, <c>clear_page</c>), and freed
/// pages are poisoned: a read of freed memory sees the poison and is counted, never a zero that looks like a fresh
/// buffer. Every <see cref="CpuCache"/> over this memory loses its lines of a block when the block is allocated and when
/// it is freed, so neither a clean line (old bytes) nor a dirty one (old writes, cleaned later) reaches the next owner.
/// </para>
/// <para>
/// Reach counts: the IOMMU adds reach when a page-table entry makes a page reachable by a device and removes it when no
/// device can reach the page any more (strict mode: after the invalidation; lazy mode: after the flush). Freeing a
/// reachable page makes it <see cref="PageState.FreePending"/>; it is poisoned and returned to the allocator when its
/// reach drops to zero. Not thread-safe: the simulation is single-threaded.
/// </para>
/// </remarks>
public sealed class PhysicalMemory
{
    /// <summary>Bytes per page frame.</summary>
    public const int PageSize = 4096;

    /// <summary>log2 of <see cref="PageSize"/>.</summary>
    public const int PageShift = 12;

    /// <summary>The largest buddy order: blocks of 2^10 pages, 4 MiB.</summary>
    public const int MaxOrder = 10;

    /// <summary>Physical address of the first page frame.</summary>
    public const ulong BaseAddress = 0x4000_0000;

    /// <summary>The byte freed pages are filled with (Linux's <c>POISON_FREE</c>).</summary>
    public const byte PoisonByte = 0x6b;

    private const int ChunkShift = 9; // 512 pages = 2 MiB of bytes per chunk
    private const int ChunkPages = 1 << ChunkShift;
    private const int None = -1;

    private readonly SimStats _stats;
    private readonly bool _deferFreeWhileReachable;
    private readonly bool _shuffle;
    private readonly int _totalPages;
    private readonly int _buddyPages;
    private readonly byte[] _state;
    private readonly int[] _reach;
    private readonly sbyte[] _freeOrder;
    private readonly sbyte[] _allocOrder;
    private readonly int[] _next;
    private readonly int[] _prev;
    private readonly int[] _freeHead = new int[MaxOrder + 1];
    private readonly int[] _freeTail = new int[MaxOrder + 1];
    private readonly long[] _freeBlocks = new long[MaxOrder + 1];
    private readonly byte[]?[] _chunks;
    private readonly Dictionary<int, int> _contiguousRuns = [];
    private readonly List<CpuCache> _caches = [];
    private SplitMix64 _random;

    /// <summary>Creates the memory with every page free.</summary>
    /// <param name="bytes">Total size; a multiple of <see cref="PageSize"/>.</param>
    /// <param name="contiguousBytes">Size of the contiguous region, taken from the top of <paramref name="bytes"/>; a multiple of <see cref="PageSize"/>.</param>
    /// <param name="stats">The SoC's counters.</param>
    /// <param name="shuffleSeed">
    /// Non-zero: shuffle the buddy free lists deterministically at start and place freed blocks at the head or tail of
    /// their list by the same generator, as Linux's <c>CONFIG_SHUFFLE_PAGE_ALLOCATOR</c> does, so allocations are
    /// physically scattered. Zero: allocations come in address order.
    /// </param>
    /// <param name="deferFreeWhileReachable">
    /// True (the real rule): a reachable page is held back until no device can reach it. False frees at once; tests use it
    /// to prove that a use-after-free is detected.
    /// </param>
    public PhysicalMemory(long bytes, long contiguousBytes, SimStats stats, int shuffleSeed = 0, bool deferFreeWhileReachable = true)
    {
        ArgumentNullException.ThrowIfNull(stats);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bytes);
        ArgumentOutOfRangeException.ThrowIfNegative(contiguousBytes);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(contiguousBytes, bytes);
        if (bytes % PageSize != 0 || contiguousBytes % PageSize != 0)
        {
            throw new ArgumentException($"Memory sizes must be multiples of {PageSize} bytes.", nameof(bytes));
        }

        if (bytes / PageSize > int.MaxValue / 2)
        {
            throw new ArgumentOutOfRangeException(nameof(bytes), "At most 2^30 pages (4 TiB) of simulated memory.");
        }

        _stats = stats;
        _deferFreeWhileReachable = deferFreeWhileReachable;
        _totalPages = (int)(bytes / PageSize);
        _buddyPages = _totalPages - (int)(contiguousBytes / PageSize);
        _state = new byte[_totalPages];
        _reach = new int[_totalPages];
        _freeOrder = new sbyte[_totalPages];
        _allocOrder = new sbyte[_totalPages];
        _next = new int[_totalPages];
        _prev = new int[_totalPages];
        _chunks = new byte[]?[(_totalPages + ChunkPages - 1) >> ChunkShift];
        _freeOrder.AsSpan().Fill(None);
        _allocOrder.AsSpan().Fill(None);
        _freeHead.AsSpan().Fill(None);
        _freeTail.AsSpan().Fill(None);
        FreePages = _totalPages;

        // Carve the buddy region into the largest naturally aligned blocks, in address order.
        int index = 0;
        while (index < _buddyPages)
        {
            int order = MaxOrder;
            while (order > 0 && ((index & ((1 << order) - 1)) != 0 || index + (1 << order) > _buddyPages))
            {
                order--;
            }

            AddFree(index, order, tail: true);
            index += 1 << order;
        }

        if (shuffleSeed != 0)
        {
            _shuffle = true;
            _random = new SplitMix64((ulong)(uint)shuffleSeed * 0x2545F4914F6CDD1DUL + 1);
            ShuffleFreeList(MaxOrder);
        }
    }

    /// <summary>Number of page frames.</summary>
    public long TotalPages => _totalPages;

    /// <summary>Page frames in the buddy region.</summary>
    public long BuddyPages => _buddyPages;

    /// <summary>Page frames in the contiguous region.</summary>
    public long ContiguousPages => _totalPages - _buddyPages;

    /// <summary>The first pfn (<see cref="BaseAddress"/> / <see cref="PageSize"/>).</summary>
    public static ulong FirstPfn => BaseAddress >> PageShift;

    /// <summary>The first pfn of the contiguous region.</summary>
    public ulong FirstContiguousPfn => FirstPfn + (ulong)_buddyPages;

    /// <summary>One past the last physical address.</summary>
    public ulong EndAddress => BaseAddress + ((ulong)_totalPages << PageShift);

    /// <summary>Pages owned by the allocators.</summary>
    public long FreePages { get; private set; }

    /// <summary>Pages allocated to an owner.</summary>
    public long AllocatedPages { get; private set; }

    /// <summary>Pages freed by their owner and held back while a device can still reach them.</summary>
    public long FreePendingPages { get; private set; }

    /// <summary>Bytes of page contents actually allocated (2 MiB chunks touched so far).</summary>
    public long BackingBytes { get; private set; }

    /// <summary>
    /// Fault injection: asked before every allocation (<see cref="SimFaultSite.PageAllocation"/> for
    /// <see cref="TryAllocate"/>, <see cref="SimFaultSite.ContiguousAllocation"/> for <see cref="TryAllocateContiguous"/>);
    /// when it returns true the allocation fails as if memory were exhausted. Null (the default) never fails.
    /// </summary>
    public Func<SimFaultSite, bool>? FaultInjection { get; set; }

    /// <summary>Free blocks of exactly <paramref name="order"/> in the buddy allocator.</summary>
    public long FreeBlockCount(int order)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(order);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(order, MaxOrder);
        return _freeBlocks[order];
    }

    /// <summary>Allocates a naturally aligned block of 2^<paramref name="order"/> pages from the buddy allocator.</summary>
    /// <returns>False when no block of that order can be found or split off.</returns>
    public bool TryAllocate(int order, out ulong pfn)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(order);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(order, MaxOrder);
        if (FaultInjection?.Invoke(SimFaultSite.PageAllocation) == true)
        {
            pfn = 0;
            return false;
        }

        int o = order;
        while (o <= MaxOrder && _freeHead[o] == None)
        {
            o++;
        }

        if (o > MaxOrder)
        {
            pfn = 0;
            return false;
        }

        int index = _freeHead[o];
        RemoveFree(index, o);
        while (o > order)
        {
            // Keep the lower half, give the upper half back (Linux's expand()).
            o--;
            AddFree(index + (1 << o), o, tail: false);
        }

        int pages = 1 << order;
        _allocOrder[index] = (sbyte)order;
        _state.AsSpan(index, pages).Fill((byte)PageState.Allocated);
        FreePages -= pages;
        AllocatedPages += pages;
        HandOut(index, pages);
        pfn = FirstPfn + (ulong)index;
        return true;
    }

    /// <summary>
    /// Frees a block returned by <see cref="TryAllocate"/>. Pages a device can still reach become
    /// <see cref="PageState.FreePending"/>; the rest are poisoned and returned at once.
    /// </summary>
    /// <exception cref="InvalidOperationException">The block is not an allocated block of that order: a double free or a bad free.</exception>
    public void Free(ulong pfn, int order)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(order);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(order, MaxOrder);
        int index = IndexOf(pfn, 1);
        if (index >= _buddyPages || _allocOrder[index] != order)
        {
            throw new InvalidOperationException(
                $"Free of pfn 0x{pfn:x} order {order}: not an allocated block of that order (double free, or a block not from TryAllocate).");
        }

        _allocOrder[index] = None;
        ReleaseOwned(index, 1 << order, order);
    }

    /// <summary>Allocates <paramref name="pages"/> physically contiguous pages from the contiguous region, first fit.</summary>
    /// <returns>False when no run of free pages is long enough.</returns>
    public bool TryAllocateContiguous(long pages, out ulong pfn)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(pages);
        if (FaultInjection?.Invoke(SimFaultSite.ContiguousAllocation) == true)
        {
            pfn = 0;
            return false;
        }

        int run = 0;
        for (int i = _buddyPages; i < _totalPages; i++)
        {
            if (_state[i] != (byte)PageState.Free)
            {
                run = 0;
                continue;
            }

            if (++run == pages)
            {
                int start = i - run + 1;
                _state.AsSpan(start, run).Fill((byte)PageState.Allocated);
                _contiguousRuns.Add(start, run);
                FreePages -= run;
                AllocatedPages += run;
                HandOut(start, run);
                pfn = FirstPfn + (ulong)start;
                return true;
            }
        }

        pfn = 0;
        return false;
    }

    /// <summary>Frees a run returned by <see cref="TryAllocateContiguous"/>, holding back reachable pages as <see cref="Free"/> does.</summary>
    /// <exception cref="InvalidOperationException">The run is not exactly an allocated contiguous run: a double free or a bad free.</exception>
    public void FreeContiguous(ulong pfn, long pages)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(pages);
        int index = IndexOf(pfn, 1);
        if (!_contiguousRuns.TryGetValue(index, out int run) || run != pages)
        {
            throw new InvalidOperationException(
                $"FreeContiguous of pfn 0x{pfn:x}, {pages} pages: not an allocated contiguous run (double free, or wrong length).");
        }

        _contiguousRuns.Remove(index);
        ReleaseOwned(index, run, order: -1);
    }

    /// <summary>The state of one page frame.</summary>
    public PageState GetState(ulong pfn) => (PageState)_state[IndexOf(pfn, 1)];

    /// <summary>How many device mappings can reach the page now.</summary>
    public int ReachCount(ulong pfn) => _reach[IndexOf(pfn, 1)];

    /// <summary>Records that a device can now reach <paramref name="pages"/> pages from <paramref name="pfn"/>. Called by the IOMMU when it writes PTEs.</summary>
    public void AddReach(ulong pfn, long pages)
    {
        int start = IndexOf(pfn, pages);
        Span<int> reach = _reach.AsSpan(start, (int)pages);
        for (int i = 0; i < reach.Length; i++)
        {
            reach[i]++;
        }
    }

    /// <summary>
    /// Records that a device can no longer reach the pages. Called by the IOMMU after the invalidation (strict) or the
    /// flush (lazy). A FreePending page whose reach drops to zero is poisoned and returned to its allocator.
    /// </summary>
    /// <exception cref="InvalidOperationException">A page's reach would drop below zero.</exception>
    public void RemoveReach(ulong pfn, long pages)
    {
        int start = IndexOf(pfn, pages);
        int end = start + (int)pages;
        int[] reach = _reach;
        for (int i = start; i < end; i++)
        {
            int r = --reach[i];
            if (r <= 0)
            {
                if (r < 0)
                {
                    reach[i] = 0;
                    throw new InvalidOperationException($"Reach count of pfn 0x{FirstPfn + (ulong)i:x} dropped below zero: unbalanced RemoveReach.");
                }

                if (_state[i] == (byte)PageState.FreePending)
                {
                    FreePendingPages--;
                    ReturnPage(i);
                }
            }
        }
    }

    /// <summary>
    /// Checked read by physical address, any length, crossing pages. Touching a Free page counts
    /// <see cref="SimStats.FreedPageAccesses"/> (and reads what is there: the poison unless a stray write landed), touching
    /// a FreePending page counts <see cref="SimStats.FreePendingAccesses"/>; one count per page touched.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside the memory.</exception>
    public void Read(ulong physAddr, Span<byte> dest)
    {
        CheckRange(physAddr, dest.Length);
        ulong offset = physAddr - BaseAddress;
        while (!dest.IsEmpty)
        {
            int index = (int)(offset >> PageShift);
            int inPage = (int)(offset & (PageSize - 1));
            int n = Math.Min(dest.Length, PageSize - inPage);
            CountAccess(index);
            byte[]? chunk = _chunks[index >> ChunkShift];
            if (chunk is null)
            {
                dest[..n].Clear();
            }
            else
            {
                chunk.AsSpan(((index & (ChunkPages - 1)) << PageShift) + inPage, n).CopyTo(dest);
            }

            dest = dest[n..];
            offset += (ulong)n;
        }
    }

    /// <summary>
    /// Checked write by physical address, any length, crossing pages. Counts as <see cref="Read"/> does; a write to a
    /// Free page still lands — that is the corruption a use-after-free causes.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside the memory.</exception>
    public void Write(ulong physAddr, ReadOnlySpan<byte> src)
    {
        CheckRange(physAddr, src.Length);
        ulong offset = physAddr - BaseAddress;
        while (!src.IsEmpty)
        {
            int index = (int)(offset >> PageShift);
            int inPage = (int)(offset & (PageSize - 1));
            int n = Math.Min(src.Length, PageSize - inPage);
            CountAccess(index);
            src[..n].CopyTo(PageSpan(index)[inPage..]);
            src = src[n..];
            offset += (ulong)n;
        }
    }

    /// <summary>The raw bytes of one page, unchecked: for the CPU side and for tests.</summary>
    public Span<byte> PageBytes(ulong pfn) => PageSpan(IndexOf(pfn, 1));

    /// <summary>Whether <paramref name="length"/> bytes from <paramref name="physAddr"/> lie inside the memory.</summary>
    public bool Contains(ulong physAddr, long length) =>
        physAddr >= BaseAddress && length >= 0 && physAddr - BaseAddress + (ulong)length <= (ulong)_totalPages << PageShift;

    /// <summary>Registers a CPU cache over this memory: it loses its lines of every block allocated or freed.</summary>
    internal void AddCache(CpuCache cache) => _caches.Add(cache);

    /// <summary>Counts a CPU access served by a cache line, as a memory access to that page would be counted.</summary>
    internal void CountCachedAccess(ulong pfn) => CountAccess(IndexOf(pfn, 1));

    // A block goes to a new owner: no line of the old one in any CPU cache, and zeroes in memory.
    private void HandOut(int start, int pages)
    {
        DiscardCachedLines(start, pages);
        int end = start + pages;
        for (int i = start; i < end;)
        {
            int chunkEnd = Math.Min(end, (i & ~(ChunkPages - 1)) + ChunkPages);
            byte[]? chunk = _chunks[i >> ChunkShift];
            chunk?.AsSpan((i & (ChunkPages - 1)) << PageShift, (chunkEnd - i) << PageShift).Clear(); // untouched chunks are zero
            i = chunkEnd;
        }
    }

    private void DiscardCachedLines(int start, int pages)
    {
        foreach (CpuCache cache in _caches)
        {
            cache.DiscardPages(FirstPfn + (ulong)start, pages);
        }
    }

    private void CountAccess(int index)
    {
        byte state = _state[index];
        if (state != (byte)PageState.Allocated)
        {
            if (state == (byte)PageState.Free)
            {
                _stats.FreedPageAccesses++;
            }
            else
            {
                _stats.FreePendingAccesses++;
            }
        }
    }

    private void ReleaseOwned(int start, int pages, int order)
    {
        // The owner let go: its lines, clean or dirty, are dropped, so a later CPU touch is a counted miss on a freed
        // page and a dirty line can never be written back into the next owner's buffer.
        DiscardCachedLines(start, pages);
        AllocatedPages -= pages;
        bool reachable = false;
        if (_deferFreeWhileReachable)
        {
            foreach (int r in _reach.AsSpan(start, pages))
            {
                if (r != 0)
                {
                    reachable = true;
                    break;
                }
            }
        }

        if (!reachable)
        {
            Poison(start, pages);
            _state.AsSpan(start, pages).Fill((byte)PageState.Free);
            FreePages += pages;
            if (order >= 0)
            {
                MergeAndAdd(start, order);
            }

            return;
        }

        for (int i = start; i < start + pages; i++)
        {
            if (_reach[i] != 0)
            {
                _state[i] = (byte)PageState.FreePending;
                FreePendingPages++;
            }
            else
            {
                ReturnPage(i);
            }
        }
    }

    // One page back to its allocator: order 0 into the buddy (which merges it back up), or free in the contiguous region.
    private void ReturnPage(int index)
    {
        Poison(index, 1);
        _state[index] = (byte)PageState.Free;
        FreePages++;
        if (index < _buddyPages)
        {
            MergeAndAdd(index, 0);
        }
    }

    private void MergeAndAdd(int index, int order)
    {
        while (order < MaxOrder)
        {
            int buddy = index ^ (1 << order);
            if (buddy >= _buddyPages || _freeOrder[buddy] != order)
            {
                break;
            }

            RemoveFree(buddy, order);
            index &= ~(1 << order);
            order++;
        }

        AddFree(index, order, tail: _shuffle && (_random.Next() & 1) != 0);
    }

    private void AddFree(int index, int order, bool tail)
    {
        Debug.Assert(_freeOrder[index] == None, "block already on a free list");
        _freeOrder[index] = (sbyte)order;
        _freeBlocks[order]++;
        if (_freeHead[order] == None)
        {
            _next[index] = None;
            _prev[index] = None;
            _freeHead[order] = index;
            _freeTail[order] = index;
        }
        else if (tail)
        {
            int last = _freeTail[order];
            _next[last] = index;
            _prev[index] = last;
            _next[index] = None;
            _freeTail[order] = index;
        }
        else
        {
            int first = _freeHead[order];
            _prev[first] = index;
            _next[index] = first;
            _prev[index] = None;
            _freeHead[order] = index;
        }
    }

    private void RemoveFree(int index, int order)
    {
        Debug.Assert(_freeOrder[index] == order, "block not on this free list");
        int next = _next[index];
        int prev = _prev[index];
        if (prev == None)
        {
            _freeHead[order] = next;
        }
        else
        {
            _next[prev] = next;
        }

        if (next == None)
        {
            _freeTail[order] = prev;
        }
        else
        {
            _prev[next] = prev;
        }

        _freeOrder[index] = None;
        _freeBlocks[order]--;
    }

    private void ShuffleFreeList(int order)
    {
        var blocks = new List<int>();
        for (int i = _freeHead[order]; i != None; i = _next[i])
        {
            blocks.Add(i);
        }

        for (int i = blocks.Count - 1; i > 0; i--)
        {
            int j = _random.Next(i + 1);
            (blocks[i], blocks[j]) = (blocks[j], blocks[i]);
        }

        foreach (int b in blocks)
        {
            RemoveFree(b, order);
        }

        foreach (int b in blocks)
        {
            AddFree(b, order, tail: true);
        }
    }

    private void Poison(int start, int pages)
    {
        int end = start + pages;
        for (int i = start; i < end;)
        {
            // Fill up to the end of the chunk in one go.
            int chunkEnd = Math.Min(end, (i & ~(ChunkPages - 1)) + ChunkPages);
            byte[] chunk = Chunk(i >> ChunkShift);
            chunk.AsSpan((i & (ChunkPages - 1)) << PageShift, (chunkEnd - i) << PageShift).Fill(PoisonByte);
            i = chunkEnd;
        }
    }

    private Span<byte> PageSpan(int index) =>
        Chunk(index >> ChunkShift).AsSpan((index & (ChunkPages - 1)) << PageShift, PageSize);

    private byte[] Chunk(int chunkIndex)
    {
        byte[]? chunk = _chunks[chunkIndex];
        if (chunk is null)
        {
            int pages = Math.Min(ChunkPages, _totalPages - (chunkIndex << ChunkShift));
            chunk = new byte[pages << PageShift];
            _chunks[chunkIndex] = chunk;
            BackingBytes += chunk.Length;
        }

        return chunk;
    }

    private int IndexOf(ulong pfn, long pages)
    {
        ulong first = FirstPfn;
        if (pfn < first || pages < 0 || pfn - first + (ulong)pages > (ulong)_totalPages)
        {
            throw new ArgumentOutOfRangeException(nameof(pfn), $"Pfn range 0x{pfn:x} + {pages} pages is outside the memory (pfns 0x{first:x}..0x{first + (ulong)_totalPages:x}).");
        }

        return (int)(pfn - first);
    }

    private void CheckRange(ulong physAddr, int length)
    {
        if (!Contains(physAddr, length))
        {
            throw new ArgumentOutOfRangeException(nameof(physAddr), $"Physical range 0x{physAddr:x} + {length} bytes is outside the memory (0x{BaseAddress:x}..0x{EndAddress:x}).");
        }
    }
}

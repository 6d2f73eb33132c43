// Ownership: a CacheBudget owns nothing. It orders a cache's entries by use and counts the bytes each is charged; the
// cache it serves decides what eviction means (taking the entry off its buffer under the buffer lock).
using System.Diagnostics;

namespace DmaBuf;

/// <summary>Framework state a cache stores as metadata (an import, a shared mapping), with its slot in the cache.</summary>
internal interface ICachedItem : IBufferOwnedState
{
    CacheSlot Slot { get; }
}

/// <summary>
/// A cached item's bookkeeping: the uses that keep it from eviction, whether it was revoked (taken off its buffer),
/// whether its release began, its place in the LRU order and the bytes it is charged.
/// </summary>
/// <remarks>
/// A use begins under the buffer lock (<see cref="TryBeginUseLocked"/>), and eviction claims an item under the same
/// lock only while it has no use (<see cref="ClaimIfUnused"/>), so an item in use is never evicted and an evicted one
/// can never begin a use.
/// </remarks>
internal sealed class CacheSlot
{
    private int _uses;
    private int _released;
    private bool _revoked;

    public CacheSlot(ICachedItem item, bool inUse)
    {
        Item = item;
        LruNode = new LinkedListNode<CacheSlot>(this);
        _uses = inUse ? 1 : 0;
    }

    public ICachedItem Item { get; }

    /// <summary>Uses begun and not yet ended.</summary>
    public int Uses => Volatile.Read(ref _uses);

    public bool InUse => Volatile.Read(ref _uses) > 0;

    /// <summary>Whether the item's release has begun.</summary>
    public bool IsReleased => Volatile.Read(ref _released) != 0;

    public LinkedListNode<CacheSlot> LruNode { get; }

    /// <summary>Bytes charged to the budget; changed only under the budget's lock.</summary>
    public long ChargedBytes { get; set; }

    /// <summary>Buffer lock held: begins a use unless the item was taken off its buffer.</summary>
    public bool TryBeginUseLocked()
    {
        if (_revoked)
        {
            return false;
        }

        Interlocked.Increment(ref _uses);
        return true;
    }

    /// <summary>Ends a use; returns the uses left.</summary>
    /// <exception cref="InvalidOperationException">More uses ended than began.</exception>
    public int EndUse()
    {
        int left = Interlocked.Decrement(ref _uses);
        if (left < 0)
        {
            Interlocked.Increment(ref _uses);
            throw new InvalidOperationException($"{Item}: disposed more often than imported or acquired.");
        }

        return left;
    }

    /// <summary>Buffer lock held: the item was taken off its buffer.</summary>
    public void RevokeLocked() => _revoked = true;

    /// <summary>Marks the item released; true for the one caller that does so first.</summary>
    public bool TryMarkReleased() => Interlocked.Exchange(ref _released, 1) == 0;

    /// <summary>Buffer lock held, for eviction: claims the entry if its item is a cached item nobody uses.</summary>
    public static bool ClaimIfUnused(MetadataEntry entry) => entry.ValueObject is ICachedItem { Slot.InUse: false };
}

/// <summary>
/// A byte budget over a cache's items with least-recently-used eviction of items not in use; an item is charged the
/// bytes it maps now, once, however often it was remapped.
/// </summary>
internal sealed class CacheBudget(long budgetBytes)
{
    private readonly object _lock = new();
    private readonly LinkedList<CacheSlot> _lru = [];
    private long _bytes;

    public long BudgetBytes { get; } = budgetBytes;

    public long Bytes => Interlocked.Read(ref _bytes);

    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _lru.Count;
            }
        }
    }

    /// <summary>Marks <paramref name="item"/> most recently used (adding it if new); ignored once it was released.</summary>
    public void Touch(CacheSlot item)
    {
        lock (_lock)
        {
            if (item.IsReleased)
            {
                return;
            }

            if (item.LruNode.List is not null)
            {
                _lru.Remove(item.LruNode);
            }

            _lru.AddFirst(item.LruNode);
            AssertInvariantsLocked();
        }
    }

    /// <summary>Sets what <paramref name="item"/> is charged: the bytes it maps now (not added to what it had).</summary>
    public void Charge(CacheSlot item, long bytes)
    {
        lock (_lock)
        {
            if (item.IsReleased || item.LruNode.List is null)
            {
                return; // released meanwhile: its Forget already ran or will find nothing charged
            }

            _bytes += bytes - item.ChargedBytes;
            item.ChargedBytes = bytes;
            AssertInvariantsLocked();
        }
    }

    /// <summary>Drops a released item and its charge.</summary>
    public void Forget(CacheSlot item)
    {
        lock (_lock)
        {
            if (item.LruNode.List is not null)
            {
                _lru.Remove(item.LruNode);
            }

            _bytes -= item.ChargedBytes;
            item.ChargedBytes = 0;
            AssertInvariantsLocked();
        }
    }

    /// <summary>
    /// While over budget, offers the least recently used item not in use to <paramref name="evict"/>, which claims it
    /// under its buffer's lock (false if it became used or was taken meanwhile). Stops when everything left is in use.
    /// </summary>
    /// <returns>Items evicted.</returns>
    public int EvictOverBudget(Func<CacheSlot, bool> evict)
    {
        int evicted = 0;
        HashSet<CacheSlot>? refused = null; // allocated only when a claim fails: the under-budget path allocates nothing
        while (true)
        {
            CacheSlot? victim = null;
            lock (_lock)
            {
                if (_bytes <= BudgetBytes)
                {
                    return evicted;
                }

                for (LinkedListNode<CacheSlot>? n = _lru.Last; n is not null; n = n.Previous)
                {
                    if (!n.Value.InUse && refused?.Contains(n.Value) != true)
                    {
                        victim = n.Value;
                        break;
                    }
                }
            }

            if (victim is null)
            {
                return evicted; // everything cached is in use: over budget until a use ends
            }

            if (evict(victim))
            {
                evicted++;
            }
            else
            {
                (refused ??= []).Add(victim);
            }
        }
    }

    [Conditional("DEBUG")]
    private void AssertInvariantsLocked()
    {
        long sum = 0;
        foreach (CacheSlot i in _lru)
        {
            sum += i.ChargedBytes;
        }

        if (sum != _bytes || _bytes < 0)
        {
            throw new InvalidOperationException($"Cache budget counts {_bytes} bytes but its {_lru.Count} items are charged {sum}.");
        }
    }
}

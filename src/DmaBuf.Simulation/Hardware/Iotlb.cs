namespace DmaBuf.Simulation;

/// <summary>
/// The IOTLB of one IOMMU unit: a bounded, set-associative cache of translations shared by the unit's domains and
/// tagged by address-space id (ASID). An entry translates a 4 KiB page or a 2 MiB block.
/// </summary>
/// <remarks>
/// Replacement is round-robin within a set, so the same sequence of operations always evicts the same entries. An
/// entry stays until it is evicted or invalidated: after a page-table entry is cleared, a cached translation keeps
/// working until an invalidation removes it — which is exactly what lazy invalidation risks. The caller (the domain)
/// holds the unit's lock.
/// </remarks>
public sealed class Iotlb
{
    /// <summary>Associativity used when none is given (an estimate; real IOTLBs range from 4 to fully associative).</summary>
    public const int DefaultWays = 8;

    private const int BlockShift = 21;
    private const ulong PermMask = 3;
    private const ulong AsidMask = 0xFFFFUL << 48;

    // A key packs (asid, page or block number, block flag); 0 is an empty way. Values are the physical base | permissions.
    private readonly ulong[] _keys;
    private readonly ulong[] _values;
    private readonly byte[] _victim;
    private readonly int[] _perAsid = new int[0x10000]; // valid entries per ASID: lets an invalidation skip an ASID with none
    private readonly int _ways;
    private readonly int _sets;

    /// <summary>Creates an empty IOTLB of about <paramref name="entries"/> entries.</summary>
    /// <param name="entries">Size; rounded down to a multiple of the associativity.</param>
    /// <param name="ways">Entries per set; at most 255.</param>
    public Iotlb(int entries, int ways = DefaultWays)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(entries);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(ways);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(ways, 255);
        _ways = Math.Min(ways, entries);
        _sets = entries / _ways;
        _keys = new ulong[_sets * _ways];
        _values = new ulong[_sets * _ways];
        _victim = new byte[_sets];
    }

    /// <summary>Entries the IOTLB can hold.</summary>
    public int Capacity => _keys.Length;

    /// <summary>Entries per set.</summary>
    public int Ways => _ways;

    /// <summary>Number of sets.</summary>
    public int Sets => _sets;

    /// <summary>Valid entries now.</summary>
    public int Count { get; private set; }

    /// <summary>Entries evicted to make room so far.</summary>
    public long Evictions { get; private set; }

    /// <summary>Looks up the translation of <paramref name="iova"/> for <paramref name="asid"/>: a page entry first, then a block entry.</summary>
    /// <param name="asid">The domain's address-space id (1..65535).</param>
    /// <param name="iova">Device address.</param>
    /// <param name="physAddr">The physical address of <paramref name="iova"/> when found.</param>
    /// <param name="permissions">The cached entry's permissions when found.</param>
    public bool Lookup(int asid, ulong iova, out ulong physAddr, out IommuPermissions permissions)
    {
        if (Count != 0)
        {
            int slot = Find(PageKey(asid, iova));
            if (slot >= 0)
            {
                ulong v = _values[slot];
                physAddr = (v & ~(ulong)(PhysicalMemory.PageSize - 1)) | (iova & (PhysicalMemory.PageSize - 1));
                permissions = (IommuPermissions)(v & PermMask);
                return true;
            }

            slot = Find(BlockKey(asid, iova));
            if (slot >= 0)
            {
                ulong v = _values[slot];
                physAddr = (v & ~((1UL << BlockShift) - 1)) | (iova & ((1UL << BlockShift) - 1));
                permissions = (IommuPermissions)(v & PermMask);
                return true;
            }
        }

        physAddr = 0;
        permissions = IommuPermissions.None;
        return false;
    }

    /// <summary>Caches a translation, evicting the set's next victim when the set is full.</summary>
    /// <param name="asid">The domain's address-space id (1..65535).</param>
    /// <param name="iova">Any address inside the page or block.</param>
    /// <param name="physBase">Physical address of the page (or block) start.</param>
    /// <param name="block">True for a 2 MiB block entry, false for a 4 KiB page entry.</param>
    /// <param name="permissions">The mapping's permissions.</param>
    public void Insert(int asid, ulong iova, ulong physBase, bool block, IommuPermissions permissions)
    {
        ulong key = block ? BlockKey(asid, iova) : PageKey(asid, iova);
        int set = SetOf(key);
        int first = set * _ways;
        int empty = -1;
        for (int i = first; i < first + _ways; i++)
        {
            if (_keys[i] == key)
            {
                _values[i] = physBase | (ulong)permissions;
                return;
            }

            if (empty < 0 && _keys[i] == 0)
            {
                empty = i;
            }
        }

        if (empty < 0)
        {
            empty = first + _victim[set];
            _victim[set] = (byte)((_victim[set] + 1) % _ways);
            Evictions++;
            Count--;
            _perAsid[AsidOf(_keys[empty])]--;
        }

        _keys[empty] = key;
        _values[empty] = physBase | (ulong)permissions;
        Count++;
        _perAsid[asid]++;
    }

    /// <summary>Drops the entries that translate <paramref name="iova"/>: its page entry and any block entry covering it.</summary>
    /// <returns>Entries dropped.</returns>
    public int InvalidatePage(int asid, ulong iova)
    {
        if (Count == 0 || _perAsid[asid] == 0)
        {
            return 0;
        }

        int removed = Remove(PageKey(asid, iova)) + Remove(BlockKey(asid, iova));
        Count -= removed;
        _perAsid[asid] -= removed;
        return removed;
    }

    /// <summary>Drops every entry of <paramref name="asid"/> that translates any byte of the range.</summary>
    /// <returns>Entries dropped.</returns>
    public int InvalidateRange(int asid, ulong iova, ulong length)
    {
        CheckAsid(asid);
        if (length == 0 || _perAsid[asid] == 0)
        {
            return 0;
        }

        ulong firstPage = iova >> PhysicalMemory.PageShift;
        ulong lastPage = (iova + length - 1) >> PhysicalMemory.PageShift;
        ulong pages = lastPage - firstPage + 1;
        ulong asidTag = (ulong)asid << 48;
        int removed = 0;
        if (pages * (ulong)_ways >= (ulong)Capacity)
        {
            // Probing every page would look at more ways than the whole IOTLB has: scan it once instead.
            const int shift = BlockShift - PhysicalMemory.PageShift;
            ulong firstBlock = firstPage >> shift;
            ulong lastBlock = lastPage >> shift;
            ulong[] keys = _keys;
            for (int i = 0; i < keys.Length; i++)
            {
                ulong key = keys[i];
                if ((key & AsidMask) == asidTag)
                {
                    ulong number = (key & ~AsidMask) >> 1;
                    bool hit = (key & 1) == 0
                        ? number >= firstPage && number <= lastPage
                        : number >= firstBlock && number <= lastBlock;
                    if (hit)
                    {
                        keys[i] = 0;
                        removed++;
                    }
                }
            }
        }
        else
        {
            for (ulong p = firstPage; p <= lastPage; p++)
            {
                removed += Remove(asidTag | (p << 1));
            }

            for (ulong b = firstPage >> (BlockShift - PhysicalMemory.PageShift); b <= lastPage >> (BlockShift - PhysicalMemory.PageShift); b++)
            {
                removed += Remove(asidTag | (b << 1) | 1);
            }
        }

        Count -= removed;
        _perAsid[asid] -= removed;
        return removed;
    }

    /// <summary>Drops every entry of <paramref name="asid"/>.</summary>
    /// <returns>Entries dropped.</returns>
    public int InvalidateAsid(int asid)
    {
        CheckAsid(asid);
        if (_perAsid[asid] == 0)
        {
            return 0;
        }

        ulong asidTag = (ulong)asid << 48;
        ulong[] keys = _keys;
        int removed = 0;
        for (int i = 0; i < keys.Length; i++)
        {
            if ((keys[i] & AsidMask) == asidTag)
            {
                keys[i] = 0;
                removed++;
            }
        }

        Count -= removed;
        _perAsid[asid] = 0;
        return removed;
    }

    /// <summary>Drops every entry.</summary>
    public void Clear()
    {
        Array.Clear(_keys);
        Array.Clear(_perAsid);
        Count = 0;
    }

    private static ulong PageKey(int asid, ulong iova)
    {
        CheckAsid(asid);
        return ((ulong)asid << 48) | ((iova >> PhysicalMemory.PageShift) << 1);
    }

    private static ulong BlockKey(int asid, ulong iova)
    {
        CheckAsid(asid);
        return ((ulong)asid << 48) | ((iova >> BlockShift) << 1) | 1;
    }

    private static void CheckAsid(int asid)
    {
        if ((uint)(asid - 1) >= 0xFFFF)
        {
            throw new ArgumentOutOfRangeException(nameof(asid), asid, "An ASID is 1..65535.");
        }
    }

    private static int AsidOf(ulong key) => (int)(key >> 48);

    private int SetOf(ulong key) => (int)((uint)((key * 0x9E3779B97F4A7C15UL) >> 32) % (uint)_sets);

    private int Find(ulong key)
    {
        int first = SetOf(key) * _ways;
        for (int i = first; i < first + _ways; i++)
        {
            if (_keys[i] == key)
            {
                return i;
            }
        }

        return -1;
    }

    // Removes without touching Count (callers adjust it); returns 1 if an entry was removed.
    private int Remove(ulong key)
    {
        int slot = Find(key);
        if (slot < 0)
        {
            return 0;
        }

        _keys[slot] = 0;
        return 1;
    }
}

using System.Diagnostics;

namespace DmaBuf.Simulation;

// A 4-level IO page table in the shape of the Arm LPAE / VT-d second-level format with a 4 KiB granule: 48-bit IOVA,
// 512 entries of 64 bits per table, 4 KiB leaves at level 3 and 2 MiB blocks at level 2. Tables are managed arrays;
// a table descriptor holds the child table's index where the hardware would hold its physical address.
// Not thread-safe: the owning domain holds its lock.
internal sealed class IoPageTable
{
    public const int IovaBits = 48;
    public const int BlockShift = 21;
    public const ulong BlockSize = 1UL << BlockShift;
    public const int PagesPerBlock = 1 << (BlockShift - PhysicalMemory.PageShift);

    // Descriptor bits (our own layout; the address field sits where LPAE puts it).
    public const ulong Valid = 1UL << 0;
    public const ulong TableOrPage = 1UL << 1; // levels 0-2: next-level table; level 3: page. Clear at level 2: block.
    public const ulong PermRead = 1UL << 6;
    public const ulong PermWrite = 1UL << 7;
    public const ulong AddressMask = 0x0000_FFFF_FFFF_F000UL;

    private const int Entries = 512;
    private const int IndexMask = Entries - 1;

    private ulong[][] _tables = new ulong[16][];
    private int[] _counts = new int[16];
    private int _tableSlots;
    private readonly Stack<int> _freeSlots = new();

    public IoPageTable()
    {
        NewTable(); // slot 0 is the root (level 0)
    }

    /// <summary>Tables allocated now, root included.</summary>
    public int TablesInUse => _tableSlots - _freeSlots.Count;

    /// <summary>Leaf entries now valid.</summary>
    public long LeafEntries { get; private set; }

    public static ulong PermissionBits(IommuPermissions permissions) =>
        ((permissions & IommuPermissions.Read) != 0 ? PermRead : 0) | ((permissions & IommuPermissions.Write) != 0 ? PermWrite : 0);

    public static IommuPermissions PermissionsOf(ulong descriptor) =>
        ((descriptor & PermRead) != 0 ? IommuPermissions.Read : IommuPermissions.None) |
        ((descriptor & PermWrite) != 0 ? IommuPermissions.Write : IommuPermissions.None);

    /// <summary>
    /// Maps <paramref name="pages"/> pages from <paramref name="iova"/> to the physically contiguous run at
    /// <paramref name="physAddr"/>, with a 2 MiB block wherever both addresses are 2 MiB aligned and a whole block
    /// remains, 4 KiB pages elsewhere. Returns the leaf entries written. All or nothing: when a write fails part way
    /// (an overlap, or <paramref name="faults"/> says so), the entries this call wrote are cleared before it throws.
    /// </summary>
    /// <exception cref="DmaMappingException">An injected page-table write failure.</exception>
    /// <exception cref="InvalidOperationException">Part of the range is already mapped.</exception>
    public long Map(ulong iova, ulong physAddr, long pages, IommuPermissions permissions, Func<SimFaultSite, bool>? faults = null)
    {
        ulong start = iova;
        long before = LeafEntries;
        try
        {
            return MapCore(ref iova, physAddr, pages, permissions, faults);
        }
        catch
        {
            // Clear what this call wrote: the pages from start up to where it stopped.
            long done = (long)((iova - start) >> PhysicalMemory.PageShift);
            if (done > 0)
            {
                Unmap(start, done);
            }

            Debug.Assert(LeafEntries == before, "a failed map left leaf entries behind");
            throw;
        }
    }

    private long MapCore(ref ulong iova, ulong physAddr, long pages, IommuPermissions permissions, Func<SimFaultSite, bool>? faults)
    {
        ulong perm = PermissionBits(permissions);
        long written = 0;
        while (pages > 0)
        {
            if (faults?.Invoke(SimFaultSite.PageTableWrite) == true)
            {
                throw new DmaMappingException($"IOVA 0x{iova:x}: page-table write failed (no page-table memory).");
            }

            int l2Slot = Descend(iova, create: true);
            ulong[] l2 = _tables[l2Slot];
            int i2 = Index(iova, 2);
            if (((iova | physAddr) & (BlockSize - 1)) == 0 && pages >= PagesPerBlock)
            {
                ulong old = l2[i2];
                if ((old & Valid) != 0)
                {
                    if ((old & TableOrPage) == 0 || _counts[Slot(old)] != 0)
                    {
                        throw Overlap(iova);
                    }

                    FreeTable(Slot(old)); // an empty page table left by earlier mappings: replace it by the block
                    _counts[l2Slot]--;
                }

                l2[i2] = physAddr | perm | Valid;
                _counts[l2Slot]++;
                written++;
                LeafEntries++;
                iova += BlockSize;
                physAddr += BlockSize;
                pages -= PagesPerBlock;
                continue;
            }

            int l3Slot = Child(l2Slot, i2, iova);
            Span<ulong> l3 = _tables[l3Slot];
            int i3 = Index(iova, 3);
            int n = (int)Math.Min(pages, Entries - i3);
            ulong entry = physAddr | perm | Valid | TableOrPage;
            Span<ulong> run = l3.Slice(i3, n);
            if (run.IndexOfAnyExcept(0UL) >= 0)
            {
                throw Overlap(iova); // checked before writing: another mapping's entries are never overwritten
            }

            for (int k = 0; k < run.Length; k++)
            {
                run[k] = entry;
                entry += PhysicalMemory.PageSize;
            }

            _counts[l3Slot] += n;
            written += n;
            LeafEntries += n;
            iova += (ulong)n << PhysicalMemory.PageShift;
            physAddr += (ulong)n << PhysicalMemory.PageShift;
            pages -= n;
        }

        return written;
    }

    /// <summary>Clears the leaf entries covering <paramref name="pages"/> pages from <paramref name="iova"/>; returns how many were cleared.</summary>
    /// <exception cref="InvalidOperationException">Part of the range is not mapped, or the range splits a block.</exception>
    public long Unmap(ulong iova, long pages)
    {
        long cleared = 0;
        while (pages > 0)
        {
            int l2Slot = Descend(iova, create: false);
            if (l2Slot < 0)
            {
                throw NotMapped(iova);
            }

            ulong[] l2 = _tables[l2Slot];
            int i2 = Index(iova, 2);
            ulong e2 = l2[i2];
            if ((e2 & Valid) == 0)
            {
                throw NotMapped(iova);
            }

            if ((e2 & TableOrPage) == 0)
            {
                if ((iova & (BlockSize - 1)) != 0 || pages < PagesPerBlock)
                {
                    throw new InvalidOperationException($"Unmap at IOVA 0x{iova:x} would split a 2 MiB block.");
                }

                l2[i2] = 0;
                _counts[l2Slot]--;
                cleared++;
                iova += BlockSize;
                pages -= PagesPerBlock;
                continue;
            }

            int l3Slot = Slot(e2);
            Span<ulong> l3 = _tables[l3Slot];
            int i3 = Index(iova, 3);
            int n = (int)Math.Min(pages, Entries - i3);
            ulong valid = Valid;
            Span<ulong> run = l3.Slice(i3, n);
            for (int k = 0; k < run.Length; k++)
            {
                valid &= run[k];
                run[k] = 0;
            }

            if (valid == 0)
            {
                throw NotMapped(iova);
            }

            _counts[l3Slot] -= n;
            cleared += n;
            iova += (ulong)n << PhysicalMemory.PageShift;
            pages -= n;
        }

        LeafEntries -= cleared;
        return cleared;
    }

    /// <summary>Walks the table for <paramref name="iova"/> as the hardware would.</summary>
    /// <param name="iova">The device address.</param>
    /// <param name="physAddr">The translated physical address.</param>
    /// <param name="leafBase">Physical start of the leaf (page or block).</param>
    /// <param name="block">Whether the leaf is a 2 MiB block.</param>
    /// <param name="permissions">The leaf's permissions.</param>
    public bool Walk(ulong iova, out ulong physAddr, out ulong leafBase, out bool block, out IommuPermissions permissions)
    {
        physAddr = 0;
        leafBase = 0;
        block = false;
        permissions = IommuPermissions.None;
        if (iova >> IovaBits != 0)
        {
            return false;
        }

        int slot = Descend(iova, create: false);
        if (slot < 0)
        {
            return false;
        }

        ulong e = _tables[slot][Index(iova, 2)];
        if ((e & Valid) == 0)
        {
            return false;
        }

        if ((e & TableOrPage) == 0)
        {
            block = true;
            leafBase = e & AddressMask & ~(BlockSize - 1);
            physAddr = leafBase | (iova & (BlockSize - 1));
        }
        else
        {
            e = _tables[Slot(e)][Index(iova, 3)];
            if ((e & Valid) == 0)
            {
                return false;
            }

            leafBase = e & AddressMask;
            physAddr = leafBase | (iova & (PhysicalMemory.PageSize - 1));
        }

        permissions = PermissionsOf(e);
        return true;
    }

    private static int Index(ulong iova, int level) => (int)(iova >> (39 - (9 * level))) & IndexMask;

    private static int Slot(ulong descriptor) => (int)((descriptor & AddressMask) >> PhysicalMemory.PageShift);

    // Returns the slot of the level-2 table covering iova, creating levels 1 and 2 on the way if asked; -1 if absent.
    private int Descend(ulong iova, bool create)
    {
        if (iova >> IovaBits != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(iova), $"IOVA 0x{iova:x} is outside the {IovaBits}-bit space.");
        }

        int slot = 0;
        for (int level = 0; level < 2; level++)
        {
            ulong e = _tables[slot][Index(iova, level)];
            if ((e & Valid) == 0)
            {
                if (!create)
                {
                    return -1;
                }

                slot = Child(slot, Index(iova, level), iova);
            }
            else
            {
                slot = Slot(e);
            }
        }

        return slot;
    }

    // The next-level table under entry index of table parentSlot, created when missing.
    private int Child(int parentSlot, int index, ulong iova)
    {
        ulong e = _tables[parentSlot][index];
        if ((e & Valid) != 0)
        {
            if ((e & TableOrPage) == 0)
            {
                throw Overlap(iova);
            }

            return Slot(e);
        }

        int child = NewTable();
        _tables[parentSlot][index] = ((ulong)child << PhysicalMemory.PageShift) | TableOrPage | Valid;
        _counts[parentSlot]++;
        return child;
    }

    private int NewTable()
    {
        if (_freeSlots.TryPop(out int slot))
        {
            return slot;
        }

        if (_tableSlots == _tables.Length)
        {
            Array.Resize(ref _tables, _tables.Length * 2);
            Array.Resize(ref _counts, _counts.Length * 2);
        }

        slot = _tableSlots++;
        _tables[slot] = new ulong[Entries];
        return slot;
    }

    private void FreeTable(int slot)
    {
        // Only empty tables are freed; they are already all zeroes.
        _counts[slot] = 0;
        _freeSlots.Push(slot);
    }

    private static InvalidOperationException Overlap(ulong iova) =>
        new($"IOVA 0x{iova:x} is already mapped: overlapping mappings in one page table.");

    private static InvalidOperationException NotMapped(ulong iova) =>
        new($"IOVA 0x{iova:x} is not mapped.");
}

namespace DmaBuf.Simulation;

/// <summary>
/// The CPU's data cache in front of physical memory, for a non-coherent SoC: CPU reads fill lines from memory and keep
/// serving them after a device has written memory; CPU writes stay in dirty lines until they are cleaned. Devices see
/// memory only. So a CPU write is visible to a device only after a clean (end of CPU write access), and a device write
/// is visible to the CPU only after an invalidate (begin of CPU read access) — a missing bracket shows up as stale data.
/// </summary>
/// <remarks>
/// <para>Lines are one page (4 KiB): coarser than real 64-byte lines, which only makes the hazards easier to hit.</para>
/// <para>The cache registers with its memory, which drops the cache's lines of a block whenever the block is allocated
/// or freed (design rule 12): a new owner never reads a previous owner's bytes from a clean line, and a previous owner's
/// dirty line is never written back into the new owner's buffer. Every access to a page that is not allocated is
/// counted as memory counts it, whether a line serves it or not.</para>
/// </remarks>
public sealed class CpuCache
{
    private readonly PhysicalMemory _memory;
    private readonly Dictionary<ulong, Line> _lines = [];

    /// <summary>Creates an empty cache over <paramref name="memory"/>.</summary>
    public CpuCache(PhysicalMemory memory)
    {
        ArgumentNullException.ThrowIfNull(memory);
        _memory = memory;
        memory.AddCache(this);
    }

    /// <summary>Lines held.</summary>
    public int LineCount => _lines.Count;

    /// <summary>Dirty lines held.</summary>
    public int DirtyLines => _lines.Values.Count(l => l.Dirty);

    /// <summary>CPU read of physical memory through the cache.</summary>
    public void Read(ulong physAddr, Span<byte> destination)
    {
        int done = 0;
        while (done < destination.Length)
        {
            ulong pa = physAddr + (ulong)done;
            int offset = (int)(pa & (PhysicalMemory.PageSize - 1));
            int n = Math.Min(PhysicalMemory.PageSize - offset, destination.Length - done);
            Fill(pa >> PhysicalMemory.PageShift).Bytes.AsSpan(offset, n).CopyTo(destination.Slice(done, n));
            done += n;
        }
    }

    /// <summary>CPU write of physical memory through the cache (write-back: memory is not touched).</summary>
    public void Write(ulong physAddr, ReadOnlySpan<byte> source)
    {
        int done = 0;
        while (done < source.Length)
        {
            ulong pa = physAddr + (ulong)done;
            int offset = (int)(pa & (PhysicalMemory.PageSize - 1));
            int n = Math.Min(PhysicalMemory.PageSize - offset, source.Length - done);
            Line line = Fill(pa >> PhysicalMemory.PageShift);
            source.Slice(done, n).CopyTo(line.Bytes.AsSpan(offset, n));
            line.Dirty = true;
            done += n;
        }
    }

    /// <summary>Writes dirty lines of the range back to memory (<c>dma_sync_*_for_device</c>, cache clean).</summary>
    public void Clean(ScatterTable physical) => ForEachLine(physical, (pfn, line) =>
    {
        if (line.Dirty)
        {
            _memory.Write(pfn << PhysicalMemory.PageShift, line.Bytes);
            line.Dirty = false;
        }
    });

    /// <summary>
    /// Drops the range's clean lines so the next CPU read fetches memory (<c>dma_sync_*_for_cpu</c>, invalidate); dirty
    /// lines are written back first, so a CPU write in flight is not lost.
    /// </summary>
    public void Invalidate(ScatterTable physical)
    {
        Clean(physical);
        ForEachLine(physical, (pfn, _) => _lines.Remove(pfn));
    }

    /// <summary>Discards the range's lines without writing them back (the pages are being freed).</summary>
    public void Discard(ScatterTable physical) => ForEachLine(physical, (pfn, _) => _lines.Remove(pfn));

    /// <summary>Discards the lines of <paramref name="pages"/> pages from <paramref name="pfn"/>; called by the memory.</summary>
    internal void DiscardPages(ulong pfn, long pages)
    {
        if (_lines.Count == 0)
        {
            return;
        }

        if (pages > _lines.Count)
        {
            // A large block over a small cache: look at the lines, not at every page.
            foreach (ulong p in _lines.Keys)
            {
                if (p - pfn < (ulong)pages)
                {
                    _lines.Remove(p);
                }
            }

            return;
        }

        for (ulong p = pfn; p < pfn + (ulong)pages; p++)
        {
            _lines.Remove(p);
        }
    }

    private Line Fill(ulong pfn)
    {
        if (_lines.TryGetValue(pfn, out Line? line))
        {
            _memory.CountCachedAccess(pfn); // a hit on a freed page is still a use-after-free
        }
        else
        {
            line = new Line(new byte[PhysicalMemory.PageSize]);
            _memory.Read(pfn << PhysicalMemory.PageShift, line.Bytes);
            _lines.Add(pfn, line);
        }

        return line;
    }

    private void ForEachLine(ScatterTable physical, Action<ulong, Line> action)
    {
        foreach (ScatterSegment s in physical.Segments)
        {
            for (ulong pfn = s.Address >> PhysicalMemory.PageShift; pfn < (s.End + PhysicalMemory.PageSize - 1) >> PhysicalMemory.PageShift; pfn++)
            {
                if (_lines.TryGetValue(pfn, out Line? line))
                {
                    action(pfn, line);
                }
            }
        }
    }

    private sealed class Line(byte[] bytes)
    {
        public byte[] Bytes { get; } = bytes;

        public bool Dirty { get; set; }
    }
}

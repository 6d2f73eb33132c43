namespace DmaBuf.Simulation;

/// <summary>
/// A misbehaving device: after every unmap in its domain it keeps reading and writing the old device addresses (a stale
/// prefetcher, an engine that was not stopped), at a few moments between the unmap and the end of the lazy-flush window.
/// Its accesses go through the IOMMU as real DMA does (the IOTLB first, then a page walk), so what it reaches depends on
/// the mode: nothing in strict mode, pages still held in lazy mode (design rule 8), and, in linux-lazy mode, pages
/// already freed or reused by another buffer (Markuze et al., ASPLOS'16). Its own refused accesses are not the
/// strategy's faults and are counted apart; its accesses to freed pages count in the safety figures.
/// </summary>
internal sealed class RogueDevice
{
    private readonly SimDevice _device;
    private readonly IommuDomain _domain;
    private readonly PhysicalMemory _memory;
    private readonly SimClock _clock;
    private readonly long[] _probeDelaysNs;

    public RogueDevice(SimDevice device, IommuDomain domain, PhysicalMemory memory, SimClock clock, CostProfile profile)
    {
        _device = device;
        _domain = domain;
        _memory = memory;
        _clock = clock;

        // Right after the unmap, then through the flush timer's window (and once past it, when the flush has happened).
        long window = Math.Max(profile.FlushTimeoutNs, 1);
        _probeDelaysNs = [1_000, window / 4, window / 2, window - 1_000, window + 1_000];
        domain.Unmapped = OnUnmapped;
    }

    public long Accesses { get; private set; }

    public long Blocked { get; private set; }

    public long Reached { get; private set; }

    public long FreedPageAccesses { get; private set; }

    public long BytesReachableAfterFree { get; private set; }

    public RogueReport Report()
    {
        long[] windows = [.. _domain.UnmapWindowsNs.Order()];
        long p50 = windows.Length == 0 ? 0 : windows[(windows.Length - 1) / 2];
        long max = windows.Length == 0 ? 0 : windows[^1];
        return new RogueReport(_device.Name, Accesses, Blocked, Reached, FreedPageAccesses, BytesReachableAfterFree, p50, max);
    }

    private void OnUnmapped(ulong iova, ulong pages)
    {
        var freedSeen = new HashSet<ulong>();
        foreach (long delay in _probeDelaysNs)
        {
            _clock.ScheduleAfter(delay, () => Probe(iova, pages, freedSeen));
        }
    }

    private void Probe(ulong iova, ulong pages, HashSet<ulong> freedSeen)
    {
        Span<byte> one = stackalloc byte[1];
        for (ulong i = 0; i < pages; i++)
        {
            ulong address = iova + (i << PhysicalMemory.PageShift);
            Accesses += 2;
            if (_domain.TryTranslate(address, write: false, out ulong pa))
            {
                Reached++;
                ulong pfn = pa >> PhysicalMemory.PageShift;
                if (_memory.GetState(pfn) == PageState.Free)
                {
                    FreedPageAccesses++;
                    if (freedSeen.Add(pfn))
                    {
                        BytesReachableAfterFree += PhysicalMemory.PageSize;
                    }
                }

                _memory.Read(pa, one); // the access itself: a freed page counts in SimStats.FreedPageAccesses
            }
            else
            {
                Blocked++;
            }

            // The write: its mappings were read-only for it (it is a reader), so a stale entry refuses it as well.
            if (_domain.TryTranslate(address, write: true, out ulong wpa))
            {
                Reached++;
                if (_memory.GetState(wpa >> PhysicalMemory.PageShift) == PageState.Free)
                {
                    FreedPageAccesses++;
                }

                _memory.Write(wpa, [0xEE]);
            }
            else
            {
                Blocked++;
            }
        }
    }
}

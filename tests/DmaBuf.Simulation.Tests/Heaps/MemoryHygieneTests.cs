namespace DmaBuf.Simulation.Tests;

/// <summary>
/// Design rule 12: memory handed out is zeroed, freed memory is poisoned, and nothing one owner left behind — a CPU
/// cache line, clean or dirty, or an IOTLB entry — is readable by the next owner of the same pages.
/// </summary>
public sealed class MemoryHygieneTests
{
    private const int Size = 64 * 1024;

    private static Soc NewSoc(IommuMode? mode = null) =>
        new(new SocOptions { MemoryBytes = 64L << 20, ContiguousBytes = 16L << 20, Seed = 3, Mode = mode });

    private static byte[] Pattern(int seed)
    {
        byte[] data = new byte[Size];
        new Random(seed).NextBytes(data);
        data[0] = 0x5a; // never all zeroes
        return data;
    }

    private static ulong[] Pfns(ScatterTable physical)
    {
        var pfns = new List<ulong>();
        foreach (ScatterSegment s in physical.Segments)
        {
            for (ulong pa = s.Address; pa < s.End; pa += PhysicalMemory.PageSize)
            {
                pfns.Add(pa >> PhysicalMemory.PageShift);
            }
        }

        return [.. pfns];
    }

    private static byte[] CpuRead(DmaBufHandle handle, bool bracket)
    {
        byte[] read = new byte[handle.Buffer.Size];
        using IDmaBufCpuView view = handle.Vmap();
        if (bracket)
        {
            handle.BeginCpuAccess(CpuAccess.Read);
        }

        view.Read(0, read);
        if (bracket)
        {
            handle.EndCpuAccess(CpuAccess.Read);
        }

        return read;
    }

    private static byte[] DmaRead(SimDevice device, DmaBufHandle handle)
    {
        byte[] read = new byte[handle.Buffer.Size];
        using DmaBufAttachment a = handle.Attach(device);
        ScatterTable map = a.Map(DmaDirection.ToDevice);
        Assert.True(device.DmaRead(map, 0, read));
        return read;
    }

    private static void CpuWrite(DmaBufHandle handle, byte[] data, bool end = true)
    {
        using IDmaBufCpuView view = handle.Vmap();
        handle.BeginCpuAccess(CpuAccess.Write);
        view.Write(0, data);
        if (end)
        {
            handle.EndCpuAccess(CpuAccess.Write);
        }
    }

    private static void AssertZeroes(byte[] bytes, string what)
    {
        int at = bytes.AsSpan().IndexOfAnyExcept((byte)0);
        Assert.True(at < 0, $"{what}: byte {at} is 0x{(at < 0 ? 0 : bytes[at]):x2}, not zero.");
    }

    [Fact]
    public void Compact_NextOwnerOfTheOldPages_ReadsZeroes_NotTheMovedBytes()
    {
        Soc soc = NewSoc();
        byte[] secret = Pattern(1);
        using DmaBufHandle moved = soc.DeviceLocalHeap.Allocate(Size, "moved");
        CpuWrite(moved, secret);
        Assert.Equal(secret, CpuRead(moved, bracket: true)); // the CPU now holds clean lines of the old placement
        ulong[] oldPfns = Pfns(soc.DeviceLocalHeap.AllocationOf(moved.Buffer).Physical);

        soc.DeviceLocalHeap.Compact(moved);
        using DmaBufHandle next = soc.ContiguousHeap.Allocate(Size, "next owner");

        Assert.Equal(oldPfns, Pfns(soc.ContiguousHeap.AllocationOf(next.Buffer).Physical)); // first fit: the old pages
        AssertZeroes(CpuRead(next, bracket: false), "CPU read of a fresh buffer, no bracket");
        AssertZeroes(CpuRead(next, bracket: true), "CPU read of a fresh buffer, bracketed");
        AssertZeroes(DmaRead(soc.Gpu, next), "DMA read of a fresh buffer");
        Assert.Equal(secret, CpuRead(moved, bracket: true));
        Assert.Equal(secret, DmaRead(soc.Gpu, moved));
        Assert.Equal(0, soc.Stats.FreedPageAccesses);
    }

    [Fact]
    public void Compact_DuringCpuWrite_DirtyLinesMoveWithTheBuffer_NotIntoTheNextOwner()
    {
        Soc soc = NewSoc();
        byte[] secret = Pattern(2);
        using DmaBufHandle moved = soc.DeviceLocalHeap.Allocate(Size, "moved");
        CpuWrite(moved, secret, end: false); // dirty lines of the old placement, not yet cleaned
        Assert.True(soc.CpuCache.DirtyLines > 0);
        ulong[] oldPfns = Pfns(soc.DeviceLocalHeap.AllocationOf(moved.Buffer).Physical);

        soc.DeviceLocalHeap.Compact(moved);
        moved.EndCpuAccess(CpuAccess.Write);
        using DmaBufHandle next = soc.ContiguousHeap.Allocate(Size, "next owner");

        Assert.Equal(oldPfns, Pfns(soc.ContiguousHeap.AllocationOf(next.Buffer).Physical));
        AssertZeroes(CpuRead(next, bracket: true), "CPU read of the next owner (its invalidate cleans what is dirty)");
        AssertZeroes(DmaRead(soc.Gpu, next), "DMA read of the next owner");
        Assert.Equal(secret, CpuRead(moved, bracket: true)); // the CPU's writes were not lost by the move either
        Assert.Equal(secret, DmaRead(soc.Gpu, moved));
    }

    [Fact]
    public void Evict_NextOwnerOfTheDeviceMemory_ReadsZeroes()
    {
        Soc soc = NewSoc();
        byte[] secret = Pattern(3);
        using DmaBufHandle moved = soc.DeviceLocalHeap.Allocate(Size, "moved");
        using (DmaBufAttachment gpu = moved.Attach(soc.Gpu))
        {
            ScatterTable w = gpu.Map(DmaDirection.FromDevice);
            Assert.True(soc.Gpu.DmaWrite(w, 0, secret));
        }

        Assert.Equal(secret, CpuRead(moved, bracket: true));
        ulong[] oldPfns = Pfns(soc.DeviceLocalHeap.AllocationOf(moved.Buffer).Physical);

        soc.DeviceLocalHeap.Evict(moved);
        using DmaBufHandle next = soc.DeviceLocalHeap.Allocate(Size, "next owner");

        Assert.Equal(oldPfns, Pfns(soc.DeviceLocalHeap.AllocationOf(next.Buffer).Physical));
        AssertZeroes(CpuRead(next, bracket: false), "CPU read of the next owner");
        AssertZeroes(DmaRead(soc.Display, next), "DMA read of the next owner");
        Assert.Equal(secret, CpuRead(moved, bracket: true));
    }

    [Theory]
    [InlineData("system")]
    [InlineData("contiguous")]
    [InlineData("device-local")]
    public void Allocate_AfterAnotherOwnerFreedThePages_ReadsZeroesThroughCpuAndDma(string heapName)
    {
        Soc soc = NewSoc();
        SimHeap heap = heapName switch
        {
            "system" => soc.SystemHeap,
            "contiguous" => soc.ContiguousHeap,
            _ => soc.DeviceLocalHeap,
        };

        // Fill all of the heap's memory with a secret, through DMA and the CPU, and free it: whatever pages the
        // next buffer gets, another owner wrote them.
        long bytes = (heap is SystemHeap ? soc.Memory.BuddyPages : soc.Memory.ContiguousPages) * PhysicalMemory.PageSize;
        ulong[] used;
        using (DmaBufHandle first = heap.Allocate(bytes, "first owner"))
        {
            used = Pfns(heap.AllocationOf(first.Buffer).Physical);
            using DmaBufAttachment vpu = first.Attach(soc.Vpu);
            ScatterTable w = vpu.Map(DmaDirection.FromDevice);
            byte[] chunk = Pattern(4);
            for (long at = 0; at + Size <= first.Buffer.Size; at += Size)
            {
                Assert.True(soc.Vpu.DmaWrite(w, at, chunk));
            }

            using IDmaBufCpuView view = first.Vmap();
            view.Read(0, new byte[Size]);          // clean lines
            view.Write(Size, chunk.AsSpan(0, 100)); // a dirty line, never cleaned
        }

        using DmaBufHandle next = heap.Allocate(Size, "next owner");

        Assert.Subset(used.ToHashSet(), Pfns(heap.AllocationOf(next.Buffer).Physical).ToHashSet());
        AssertZeroes(CpuRead(next, bracket: false), "CPU read, no bracket");
        AssertZeroes(CpuRead(next, bracket: true), "CPU read, bracketed");
        AssertZeroes(DmaRead(soc.Gpu, next), "DMA read");
        Assert.Equal(0, soc.Stats.FreedPageAccesses);
    }

    [Fact]
    public void CpuAccessToFreedPages_IsCountedEveryTime_AndThePagesStayPoisoned()
    {
        Soc soc = NewSoc();
        DmaBufHandle handle = soc.SystemHeap.Allocate(Size);
        CpuWrite(handle, Pattern(5));
        ScatterTable physical = soc.SystemHeap.AllocationOf(handle.Buffer).Physical;
        ulong pa = physical.Segments[0].Address;
        handle.Dispose();

        var read = new byte[64];
        soc.CpuCache.Read(pa, read);  // a stale CPU pointer into the freed buffer
        soc.CpuCache.Read(pa, read);  // again: the line is cached now, but it is still a use-after-free
        soc.CpuCache.Write(pa + 64, [1, 2, 3]);

        Assert.Equal(3, soc.Stats.FreedPageAccesses);
        Assert.All(read, b => Assert.Equal(PhysicalMemory.PoisonByte, b));
        Assert.Equal(PageState.Free, soc.Memory.GetState(pa >> PhysicalMemory.PageShift));
        Assert.True(soc.Memory.PageBytes(pa >> PhysicalMemory.PageShift).IndexOfAnyExcept(PhysicalMemory.PoisonByte) < 0, "freed page poisoned");
    }

    [Fact]
    public void StaleCpuWriteAfterFree_NeverReachesTheNextOwner()
    {
        Soc soc = NewSoc();
        DmaBufHandle handle = soc.ContiguousHeap.Allocate(Size);
        ulong pa = soc.ContiguousHeap.AllocationOf(handle.Buffer).Physical.Segments[0].Address;
        handle.Dispose();
        soc.CpuCache.Write(pa, Pattern(6).AsSpan(0, 4096)); // use-after-free through the CPU: a dirty line of a free page

        using DmaBufHandle next = soc.ContiguousHeap.Allocate(Size);

        Assert.Equal(pa, soc.ContiguousHeap.AllocationOf(next.Buffer).Physical.Segments[0].Address);
        Assert.Equal(1, soc.Stats.FreedPageAccesses);
        AssertZeroes(CpuRead(next, bracket: true), "CPU read of the next owner");
        AssertZeroes(DmaRead(soc.Gpu, next), "DMA read of the next owner");
    }

    [Theory]
    [InlineData(IommuMode.Strict)]
    [InlineData(IommuMode.Lazy)]
    public void ReusedIova_TranslatesToTheNewOwner_NeverThroughAStaleIotlbEntry(IommuMode mode)
    {
        Soc soc = NewSoc(mode);
        byte[] secret = Pattern(7);
        using DmaBufHandle first = soc.SystemHeap.Allocate(Size, "first owner");
        ulong oldIova;
        using (DmaBufAttachment gpu = first.Attach(soc.Gpu))
        {
            ScatterTable map = gpu.Map(DmaDirection.Bidirectional);
            oldIova = map.Segments[0].Address;
            Assert.True(soc.Gpu.DmaWrite(map, 0, secret));
            Assert.True(soc.Gpu.DmaRead(map, 0, new byte[Size])); // every page's translation is in the IOTLB now
        }

        // Lazy: the IOVA is held until the flush, which invalidates the IOTLB first. The first buffer is still alive,
        // so the next one is on other pages: a stale translation would read the secret.
        soc.FlushAll();
        using DmaBufHandle next = soc.SystemHeap.Allocate(Size, "next owner");
        using DmaBufAttachment a = next.Attach(soc.Gpu);
        ScatterTable nextMap = a.Map(DmaDirection.ToDevice);
        var read = new byte[Size];

        Assert.Equal(oldIova, nextMap.Segments[0].Address); // the same IOVA came back from the range cache
        Assert.True(soc.Gpu.DmaRead(nextMap, 0, read));
        AssertZeroes(read, "DMA through the reused IOVA");
        Assert.Equal(secret, DmaRead(soc.Display, first));
    }
}

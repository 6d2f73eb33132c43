using DmaBuf.Testing;

namespace DmaBuf.Linux.Tests;

/// <summary>
/// The promises the kernel's dma-buf heap selftest (tools/testing/selftests/dmabuf-heaps) checks, against the system
/// heap and our <see cref="DmaHeapExporter"/>: a heap buffer imports into another driver (vgem, through PRIME), memory
/// handed out is zeroed, an older or newer layout of the allocation argument still works, and bad arguments are refused.
/// Skips where the kernel has no system heap (Debian 12's 6.1); runs in the harness's 6.12 guest.
/// </summary>
[Trait(KernelRequirement.Trait, "dma-heap")]
public sealed class DmaHeapSelftestTests : IDisposable
{
    private const long OneMeg = 1024 * 1024;
    private readonly List<IDisposable> _owned = [];

    public void Dispose()
    {
        foreach (IDisposable d in _owned)
        {
            d.Dispose();
        }
    }

    [Fact]
    [Trait(KernelRequirement.Trait, "vgem")]
    public void AllocAndImport_IntoVgemThroughPrime_IsOneBufferOnBothSides()
    {
        DmaHeapExporter heap = Heap();
        LinuxFeatures features = KernelRequirement.Require(f => f.RequireDrmDriver("vgem"));
        using SafeFdHandle card = Interop.Libc.OpenReadWrite(features.RequireDrmDriver("vgem"));
        using DmaBufHandle handle = heap.Allocate(OneMeg, "heap-to-vgem");
        SafeFdHandle fd = handle.Buffer.GetLinuxBuffer().Fd;
        using (CpuMapping map = handle.MapCpu())
        {
            handle.BeginCpuAccess(CpuAccess.Write);
            map.Span.Fill(0x5c);
            handle.EndCpuAccess(CpuAccess.Write);
        }

        uint gem = Interop.Libc.DrmPrimeFdToHandle(card, fd);
        uint again = Interop.Libc.DrmPrimeFdToHandle(card, fd);
        using SafeFdHandle back = Interop.Libc.DrmPrimeHandleToFd(card, gem);

        Assert.NotEqual(0u, gem);
        Assert.Equal(gem, again); // one GEM object per imported buffer on the card
        // vgem exports an imported object as the dma-buf it came from: the same kernel object, not a copy.
        Assert.Equal(handle.Buffer.GetLinuxBuffer().Identity, FileIdentity.Of(back));
        var imports = new ImportCache(new MmapCache(), new BufferRegistry());
        using DmaBufHandle reimported = imports.Import(Interop.Libc.Duplicate(back), OneMeg);
        using CpuMapping theirs = reimported.MapCpu();
        reimported.BeginCpuAccess(CpuAccess.Read);
        bool filled = !theirs.Span.ContainsAnyExcept((byte)0x5c);
        reimported.EndCpuAccess(CpuAccess.Read);
        Assert.True(filled, "the buffer vgem hands back does not hold what was written into the heap buffer");
        Interop.Libc.DrmGemClose(card, gem);
    }

    [Fact]
    public void Alloc_IsZeroed_EvenWhereAFreedBufferWasFilled()
    {
        DmaHeapExporter heap = Heap();
        const int count = 16;
        for (int i = 0; i < count; i++)
        {
            using DmaBufHandle dirty = heap.Allocate(OneMeg);
            using CpuMapping map = dirty.MapCpu();
            dirty.BeginCpuAccess(CpuAccess.Write);
            map.Span.Fill(0xff);
            dirty.EndCpuAccess(CpuAccess.Write);
        }

        // Same sizes again: the heap hands out pages the freed buffers had, and must have cleared them.
        for (int i = 0; i < count; i++)
        {
            using DmaBufHandle fresh = heap.Allocate(OneMeg);
            using CpuMapping map = fresh.MapCpu();
            fresh.BeginCpuAccess(CpuAccess.Read);
            int dirtyAt = map.Span.IndexOfAnyExcept((byte)0);
            fresh.EndCpuAccess(CpuAccess.Read);
            Assert.True(dirtyAt < 0, $"buffer {i} has a non-zero byte at offset {dirtyAt}");
        }
    }

    [Fact]
    public unsafe void Alloc_WithTheArgumentOfAnOlderOrNewerKernel_Works()
    {
        using SafeFdHandle node = HeapNode();

        // Older: the argument without heap_flags (16 bytes); the kernel zero-fills the missing field.
        var older = new OlderAllocation { len = OneMeg, fd_flags = Interop.Libc.O_RDWR | Interop.Libc.O_CLOEXEC };
        Interop.Libc.Ioctl(node, AllocRequest(sizeof(OlderAllocation)), &older, "ioctl(DMA_HEAP_IOCTL_ALLOC, 16 bytes)");
        using (var fd = new SafeFdHandle((int)older.fd))
        {
            Assert.Equal(OneMeg, Interop.Libc.FStat(fd).Size);
        }

        // Newer: trailing fields this kernel does not know; it reads the fields it knows and ignores the rest.
        var newer = new NewerAllocation { len = OneMeg, fd_flags = Interop.Libc.O_RDWR | Interop.Libc.O_CLOEXEC, later1 = 0x1234, later2 = 0x5678 };
        Interop.Libc.Ioctl(node, AllocRequest(sizeof(NewerAllocation)), &newer, "ioctl(DMA_HEAP_IOCTL_ALLOC, 40 bytes)");
        using (var fd = new SafeFdHandle((int)newer.fd))
        {
            Assert.Equal(OneMeg, Interop.Libc.FStat(fd).Size);
        }
    }

    [Theory]
    [InlineData(0, 0x80002u, 0UL, 0u)] // no length
    [InlineData(4096, 0x80002u | 0x100u, 0UL, 0u)] // an fd flag outside O_ACCMODE | O_CLOEXEC
    [InlineData(4096, 0x80002u, 1UL, 0u)] // a heap flag (none is defined)
    [InlineData(4096, 0x80002u, ~0UL, 0u)] // every heap flag
    [InlineData(4096, 0x80002u, 0UL, 5u)] // fd set on input: it is an output
    public void Alloc_WithBadArguments_IsEinval_AndLeavesNoDescriptor(long length, uint fdFlags, ulong heapFlags, uint fdIn)
    {
        using SafeFdHandle node = HeapNode();

        Leaks.AssertNone(() =>
        {
            LinuxErrorException e = Assert.Throws<LinuxErrorException>(() => Allocate(node, length, fdFlags, heapFlags, fdIn));
            Assert.Equal(Interop.Libc.EINVAL, e.Errno);
        });
    }

    private static unsafe void Allocate(SafeFdHandle node, long length, uint fdFlags, ulong heapFlags, uint fdIn)
    {
        var data = new Interop.Libc.dma_heap_allocation_data { len = (ulong)length, fd_flags = fdFlags, heap_flags = heapFlags, fd = fdIn };
        Interop.Libc.Ioctl(node, Interop.Libc.DMA_HEAP_IOCTL_ALLOC, &data, "ioctl(DMA_HEAP_IOCTL_ALLOC)");
        new SafeFdHandle((int)data.fd).Dispose(); // not reached when the kernel refuses, which is the point
    }

    [Fact]
    public void Exporter_Allocate_BadSize_IsRefusedBeforeTheKernel()
    {
        DmaHeapExporter heap = Heap();

        Assert.Throws<ArgumentOutOfRangeException>(() => heap.Allocate(0));
        using DmaBufHandle odd = heap.Allocate(4096 + 1);
        Assert.Equal(2 * 4096, odd.Buffer.GetLinuxBuffer().FileSize); // the heap rounds up to whole pages
    }

    private static uint AllocRequest(int size) =>
        (3u << 30) | ((uint)size << 16) | ((uint)'H' << 8); // _IOWR('H', 0, size bytes)

    private DmaHeapExporter Heap()
    {
        LinuxFeatures features = KernelRequirement.Require(f => f.RequireDmaHeap("system"));
        var heap = new DmaHeapExporter("system", new MmapCache(), new BufferRegistry(), features);
        _owned.Add(heap);
        return heap;
    }

    private static SafeFdHandle HeapNode()
    {
        LinuxFeatures features = KernelRequirement.Require(f => f.RequireDmaHeap("system"));
        return Interop.Libc.OpenReadWrite(features.DmaHeapNode("system"));
    }

    private struct OlderAllocation
    {
        public ulong len;
        public uint fd;
        public uint fd_flags;
    }

    private struct NewerAllocation
    {
        public ulong len;
        public uint fd;
        public uint fd_flags;
        public ulong heap_flags;
        public ulong later1;
        public ulong later2;
    }
}

using DmaBuf.Testing;

namespace DmaBuf.Simulation.Tests;

/// <summary>The exporter contract, run against every simulated heap.</summary>
public abstract class HeapContractTests : DmaBufExporterContract
{
    protected HeapContractTests()
    {
        Soc = new Soc(new SocOptions { MemoryBytes = 64L << 20, ContiguousBytes = 32L << 20, Seed = 7 });
    }

    protected Soc Soc { get; }

    protected abstract SimHeap Heap { get; }

    protected override BufferRegistry ContractRegistry => Soc.Registry;

    protected override IDmaDevice ContractDevice => Soc.Gpu;

    protected override DmaBufHandle ContractAllocate(long size, string? name = null) => Heap.Allocate(size, name);

    [Fact]
    public void Allocate_RoundsUpToPages_AndCoversTheSize()
    {
        long before = Soc.Memory.AllocatedPages;
        using DmaBufHandle handle = Heap.Allocate(10_000, "x");

        Assert.Equal(3 * 4096, handle.Buffer.Size);
        Assert.Equal((ulong)handle.Buffer.Size, Heap.AllocationOf(handle.Buffer).Physical.TotalLength);
        Assert.Equal(before + 3, Soc.Memory.AllocatedPages);
        Assert.Equal(Heap.Name, handle.Buffer.ExporterName);
        Assert.Equal("x", handle.Buffer.Name);
    }

    [Fact]
    public void DeviceWrite_ThroughIommu_IsReadBackByCpuAndOtherDevice()
    {
        using DmaBufHandle handle = Heap.Allocate(64 * 1024);
        byte[] data = [.. Enumerable.Range(0, 64 * 1024).Select(i => (byte)(i * 7))];

        using (DmaBufAttachment writer = handle.Attach(Soc.Vpu))
        {
            ScatterTable map = writer.Map(DmaDirection.FromDevice);
            Assert.Equal(1, map.Count);
            Assert.True(Soc.Vpu.DmaWrite(map, 0, data));
            writer.Unmap(map);
        }

        byte[] viaCpu = new byte[data.Length];
        using (IDmaBufCpuView view = handle.Vmap())
        {
            view.Read(0, viaCpu);
        }

        byte[] viaGpu = new byte[data.Length];
        using (DmaBufAttachment reader = handle.Attach(Soc.Gpu))
        {
            ScatterTable map = reader.Map(DmaDirection.ToDevice);
            Assert.True(Soc.Gpu.DmaRead(map, 0, viaGpu));
        }

        Assert.Equal(data, viaCpu);
        Assert.Equal(data, viaGpu);
        Assert.Equal(0, Soc.Stats.DmaFaults);
    }

    [Fact]
    public void Release_FreesEveryPageOnce_AndPoisonsThem()
    {
        long before = Soc.Memory.AllocatedPages;
        DmaBufHandle handle = Heap.Allocate(8 * 4096);
        ulong firstPfn = Heap.AllocationOf(handle.Buffer).Physical.Segments[0].Address >> PhysicalMemory.PageShift;
        using (IDmaBufCpuView view = handle.Vmap())
        {
            view.Write(0, new byte[] { 1, 2, 3, 4 });
        }

        handle.Dispose();

        Assert.Equal(before, Soc.Memory.AllocatedPages);
        Assert.Equal(1, Heap.Releases);
        Assert.Equal(0, Heap.LiveBuffers);
        Assert.Equal(PageState.Free, Soc.Memory.GetState(firstPfn));
        Assert.All(Soc.Memory.PageBytes(firstPfn)[..4].ToArray(), b => Assert.Equal(0x6b, b));
    }

    [Fact]
    public void Allocate_StepAfterExportFails_ReleasesOnceThroughTheReference()
    {
        // Rule 7: the name is set after export; when that fails the heap may only drop its reference.
        long before = Soc.Memory.AllocatedPages;

        Assert.Throws<ArgumentException>(() => Heap.Allocate(4096, new string('n', 64)));

        Assert.Equal(1, Heap.Releases);
        Assert.Equal(0, Heap.LiveBuffers);
        Assert.Equal(before, Soc.Memory.AllocatedPages);
        Assert.Equal(0, Soc.Registry.Count);
    }

    [Fact]
    public void Vmap_HoldsAReference_UntilDisposed()
    {
        DmaBufHandle handle = Heap.Allocate(4096);
        IDmaBufCpuView view = handle.Vmap();
        handle.Dispose();

        Assert.Equal(0, Heap.Releases);
        view.Write(0, new byte[] { 9 });
        view.Dispose();
        Assert.Equal(1, Heap.Releases);
        Assert.Throws<ObjectDisposedException>(() => view.Write(0, new byte[] { 9 }));
    }

    [Fact]
    public void DmaAfterStrictUnmap_IsARecordedFault()
    {
        using DmaBufHandle handle = Heap.Allocate(4 * 4096);
        using DmaBufAttachment attachment = handle.Attach(Soc.Display);
        ScatterTable map = attachment.Map(DmaDirection.ToDevice);
        attachment.Unmap(map);

        bool ok = Soc.Display.DmaRead(map, 0, new byte[4096]);

        Assert.False(ok);
        Assert.Equal(1, Soc.Stats.DmaFaults);
        Assert.Single(Soc.Display.SimAddressSpace.Faults);
    }

    [Fact]
    public void WriteThroughReadOnlyMapping_Faults()
    {
        using DmaBufHandle handle = Heap.Allocate(4096);
        using DmaBufAttachment attachment = handle.Attach(Soc.Display);
        ScatterTable map = attachment.Map(DmaDirection.ToDevice);

        Assert.False(Soc.Display.DmaWrite(map, 0, new byte[16]));
        Assert.Equal(1, Soc.Stats.DmaFaults);
    }

    [Fact]
    public void Listing_ShowsHeapBuffersAndTheirDevices()
    {
        using DmaBufHandle handle = Heap.Allocate(4096, "listed");
        using DmaBufAttachment a = handle.Attach(Soc.Gpu);
        a.Map(DmaDirection.ToDevice);

        BufferInfo info = Assert.Single(Soc.Registry.List());

        Assert.Equal("listed", info.Name);
        Assert.Equal(Heap.Name, info.Exporter);
        Assert.Equal(["gpu"], info.AttachedDevices);
        Assert.Equal(1, info.Mappings);
    }
}

public sealed class SystemHeapContractTests : HeapContractTests
{
    protected override SimHeap Heap => Soc.SystemHeap;

    [Fact]
    public void Allocate_UsesChunkOrders8_4_0()
    {
        // 760 pages (a 1080p NV12 frame) = 2 x 256 + 15 x 16 + 8 x 1.
        using DmaBufHandle handle = Heap.Allocate(760 * 4096);
        ScatterTable physical = Heap.AllocationOf(handle.Buffer).Physical;

        ulong[] lengths = [.. physical.Segments.ToArray().Select(s => s.Length >> PhysicalMemory.PageShift)];
        Assert.Equal([256UL, 256UL, .. Enumerable.Repeat(16UL, 15), .. Enumerable.Repeat(1UL, 8)], lengths);
    }
}

public sealed class DeviceLocalHeapContractTests : HeapContractTests
{
    protected override SimHeap Heap => Soc.DeviceLocalHeap;
}

public sealed class ContiguousHeapContractTests : HeapContractTests
{
    protected override SimHeap Heap => Soc.ContiguousHeap;

    [Fact]
    public void Allocate_IsOneRun_AndMapsWithBlocksWhereAligned()
    {
        using DmaBufHandle handle = Heap.Allocate(8L << 20);
        Assert.Equal(1, Heap.AllocationOf(handle.Buffer).Physical.Count);
        using DmaBufAttachment a = handle.Attach(Soc.Gpu);
        long before = Soc.Stats.PagesMapped;

        a.Map(DmaDirection.ToDevice);

        // 2048 pages: far fewer entries than pages when 2 MiB blocks are used.
        Assert.True(Soc.Stats.PagesMapped - before < 2048);
    }
}

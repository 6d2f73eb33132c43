namespace DmaBuf.Tests;

// domain-share's cache: one mapping per (buffer, address space), bounded and owned by whoever manages the address space.
// Before it existed the shared mappings lived under a process-wide owner nobody disposed, with no budget and 0 bytes
// counted (lifetimes issue 7).
public sealed class SharedMappingCacheTests
{
    [Fact]
    public void Map_CountsBytesOnce_ForEveryDeviceOfTheSpace()
    {
        var space = new TestAddressSpace();
        using var cache = new SharedMappingCache(space);
        using var vpu = new ImportContext(new TestDevice("vpu", space), cache);
        using var display = new ImportContext(new TestDevice("display", space), cache);
        using DmaBufHandle handle = Make.Buffer(new TestExporter(), size: 3 * 4096);

        using (ImportedBuffer i = vpu.Import(handle))
        {
            i.Map(DmaDirection.FromDevice);
        }

        using (ImportedBuffer i = display.Import(handle))
        {
            i.Map(DmaDirection.ToDevice);
        }

        Assert.Equal(3 * 4096, cache.CachedBytes);
        Assert.Equal(1, cache.Count);
        Assert.Equal(1, cache.Misses);
        Assert.Equal(1, cache.Hits);
        Assert.Equal(0, vpu.CachedBytes);
        Assert.Equal(1, space.Maps);
    }

    [Fact]
    public void Budget_EvictsMappingsNotInUse_LeastRecentlyUsedFirst()
    {
        var space = new TestAddressSpace();
        using var cache = new SharedMappingCache(space, budgetBytes: 2 * 4096);
        using var context = new ImportContext(new TestDevice("display", space), cache);
        DmaBufHandle[] buffers = [.. Enumerable.Range(0, 3).Select(_ => Make.Buffer(new TestExporter()))];

        foreach (int i in new[] { 0, 1, 0, 2 })
        {
            using ImportedBuffer imp = context.Import(buffers[i]);
            imp.Map(DmaDirection.ToDevice);
        }

        Assert.Equal(1, cache.Evictions);
        Assert.Equal(2 * 4096, cache.CachedBytes);
        Assert.Equal(2, space.Live.Count);
        using (ImportedBuffer again = context.Import(buffers[1])) // the evicted one maps again
        {
            again.Map(DmaDirection.ToDevice);
        }

        Assert.Equal(4, space.Maps);
        foreach (DmaBufHandle b in buffers)
        {
            b.Dispose();
        }

        Assert.Empty(space.Live);
        Assert.Equal(0, cache.CachedBytes);
    }

    [Fact]
    public void Budget_NeverEvictsAMappingAnImportIsUsing()
    {
        var space = new TestAddressSpace();
        using var cache = new SharedMappingCache(space, budgetBytes: 4096);
        using var context = new ImportContext(new TestDevice("display", space), cache);
        using DmaBufHandle a = Make.Buffer(new TestExporter());
        using DmaBufHandle b = Make.Buffer(new TestExporter());

        using ImportedBuffer first = context.Import(a);
        ScatterTable t = first.Map(DmaDirection.ToDevice);
        using (ImportedBuffer second = context.Import(b))
        {
            second.Map(DmaDirection.ToDevice);
        }

        Assert.Contains(t.Segments[0].Address, space.Live);
        Assert.Same(t, first.Map(DmaDirection.ToDevice));
        Assert.Equal(1, cache.Evictions); // the second, once its use ended
    }

    [Fact]
    public void Dispose_UnmapsEverything_AndNeverKeepsBuffersAlive()
    {
        var exporter = new TestExporter();
        var space = new TestAddressSpace();
        var cache = new SharedMappingCache(space);
        var context = new ImportContext(new TestDevice("display", space), cache);
        DmaBufHandle handle = Make.Buffer(exporter);
        using (ImportedBuffer i = context.Import(handle))
        {
            i.Map(DmaDirection.ToDevice);
        }

        context.Dispose();
        cache.Dispose();

        Assert.Empty(space.Live);
        Assert.Equal(0, cache.CachedBytes);
        Assert.Equal(1, handle.Buffer.ReferenceCount);
        handle.Dispose();
        Assert.Equal(1, exporter.ReleaseCalls);
    }

    [Fact]
    public void Constructor_DeviceInAnotherSpace_IsRefused()
    {
        using var cache = new SharedMappingCache(new TestAddressSpace());
        ArgumentException e = Assert.Throws<ArgumentException>(() => new ImportContext(Make.Device("camera"), cache));
        Assert.Contains("camera", e.Message, StringComparison.Ordinal);
    }
}

namespace DmaBuf.Linux.Tests;

public sealed class MmapCacheTests
{
    private const long Size = 64 * 1024;

    [Fact]
    public void Acquire_SameBufferTwice_MapsOnceAndCountsAHit()
    {
        var cache = new MmapCache();
        var exporter = new MemfdExporter(cache);
        using DmaBufHandle handle = exporter.Allocate(Size);

        using (CpuMapping a = handle.MapCpu())
        using (CpuMapping b = handle.MapCpu())
        {
            Assert.Equal(a.Address, b.Address);
        }

        MmapCacheStatistics s = cache.Statistics;
        Assert.Equal((1L, 1L, 1L, 0L), (s.Hits, s.Misses, s.MapCalls, s.UnmapCalls));
        Assert.Equal(Size, s.BytesMapped);
        Assert.Equal(1, s.CachedMappings);
        Assert.True(cache.Contains(handle.Buffer.GetLinuxBuffer().Identity));
    }

    [Fact]
    public void Key_IsTheFileIdentity_SoADuplicateDescriptorHitsTheSameMapping()
    {
        var cache = new MmapCache();
        var exporter = new MemfdExporter(cache);
        using DmaBufHandle original = exporter.Allocate(Size);
        var imports = new ImportCache(cache); // another context: another DmaBuffer over the same memfd
        using DmaBufHandle other = imports.Import(Interop.Libc.Duplicate(original.Buffer.GetLinuxBuffer().Fd), Size);
        Assert.NotSame(original.Buffer, other.Buffer);
        Assert.NotEqual(original.Buffer.GetLinuxBuffer().Fd.Number, other.Buffer.GetLinuxBuffer().Fd.Number);

        using CpuMapping a = original.MapCpu();
        using CpuMapping b = other.MapCpu();

        Assert.Equal(a.Address, b.Address);
        Assert.Equal(1, cache.Statistics.MapCalls);
    }

    [Fact]
    public void Key_IsNeverTheDescriptorNumber_SoAReusedNumberMapsTheNewBuffer()
    {
        var cache = new MmapCache();
        var exporter = new MemfdExporter(cache);
        DmaBufHandle first = exporter.Allocate(Size);
        int number = first.Buffer.GetLinuxBuffer().Fd.Number;
        using (CpuMapping map = first.MapCpu())
        {
            map.Span.Fill(0xAA);
        }

        first.Dispose(); // the number is free again; the kernel hands out the lowest free one
        using DmaBufHandle second = exporter.Allocate(Size);
        Assert.Equal(number, second.Buffer.GetLinuxBuffer().Fd.Number);

        using CpuMapping secondMap = second.MapCpu();

        Assert.Equal(2, cache.Statistics.Misses);
        Assert.All(secondMap.Span[..4096].ToArray(), b => Assert.Equal(0, b)); // a fresh memfd, not the stale 0xAA
    }

    [Fact]
    public void CachedMapping_ShorterThanTheBufferNeeds_IsReplacedNotServed()
    {
        var cache = new MmapCache();
        var exporter = new MemfdExporter(cache);
        using DmaBufHandle original = exporter.Allocate(Size);
        var imports = new ImportCache(cache); // a view of the same memfd that claims only half of it
        using DmaBufHandle half = imports.Import(Interop.Libc.Duplicate(original.Buffer.GetLinuxBuffer().Fd), Size / 2);
        using CpuMapping shorter = half.MapCpu();

        using CpuMapping full = original.MapCpu();
        full.Span[(int)Size - 1] = 0x42; // would fault if the half-length mapping had been served

        Assert.Equal(2, cache.Statistics.Misses);
        Assert.Equal(2, cache.Statistics.LiveMappings); // the short one lives on for its lease
        shorter.Span[0] = 1;
        Assert.Equal(1, full.Span[0]);
    }

    [Fact]
    public void Budget_EvictsTheLeastRecentlyUsed()
    {
        var cache = new MmapCache(budgetBytes: 2 * Size);
        var exporter = new MemfdExporter(cache);
        using DmaBufHandle a = exporter.Allocate(Size);
        using DmaBufHandle b = exporter.Allocate(Size);
        using DmaBufHandle c = exporter.Allocate(Size);

        a.MapCpu().Dispose();
        b.MapCpu().Dispose();
        a.MapCpu().Dispose(); // a is now the most recently used
        c.MapCpu().Dispose(); // over budget: b goes

        Assert.True(cache.Contains(a.Buffer.GetLinuxBuffer().Identity));
        Assert.False(cache.Contains(b.Buffer.GetLinuxBuffer().Identity));
        Assert.True(cache.Contains(c.Buffer.GetLinuxBuffer().Identity));
        MmapCacheStatistics s = cache.Statistics;
        Assert.Equal(1, s.Evictions);
        Assert.Equal(1, s.UnmapCalls);
        Assert.Equal(2 * Size, s.CachedBytes);
        Assert.Equal(2, s.LiveMappings);
    }

    [Fact]
    public void Eviction_OfAMappingInUse_UnmapsOnlyWhenItsLastUserLetsGo()
    {
        var cache = new MmapCache(budgetBytes: Size);
        var exporter = new MemfdExporter(cache);
        using DmaBufHandle a = exporter.Allocate(Size);
        using DmaBufHandle b = exporter.Allocate(Size);
        int mappingsBefore = ProcessResources.BufferMappings();

        CpuMapping held = a.MapCpu();
        held.Span.Fill(0x11);
        using (CpuMapping other = b.MapCpu()) // evicts a, which is still held
        {
            Assert.Equal(1, cache.Statistics.Evictions);
            Assert.Equal(2, cache.Statistics.LiveMappings);
            Assert.Equal(0, cache.Statistics.UnmapCalls);
            Assert.All(held.Span.ToArray(), x => Assert.Equal(0x11, x)); // still mapped, still the same bytes
            Assert.Equal(mappingsBefore + 2, ProcessResources.BufferMappings());
        }

        held.Dispose();

        Assert.Equal(1, cache.Statistics.UnmapCalls);
        Assert.Equal(1, cache.Statistics.LiveMappings);
        Assert.Equal(mappingsBefore + 1, ProcessResources.BufferMappings());
    }

    [Fact]
    public void Release_OfTheBuffer_DropsItsCachedMapping()
    {
        var cache = new MmapCache();
        var exporter = new MemfdExporter(cache);
        DmaBufHandle handle = exporter.Allocate(Size);
        FileIdentity identity = handle.Buffer.GetLinuxBuffer().Identity;
        handle.MapCpu().Dispose();
        Assert.True(cache.Contains(identity));

        handle.Dispose();

        Assert.False(cache.Contains(identity));
        Assert.Equal(0, cache.Statistics.LiveMappings);
        Assert.Equal(0, cache.Statistics.Evictions); // a release is not an eviction
    }

    [Fact]
    public void Budget_SmallerThanTheWorkingSet_IsReportedAsThrashing()
    {
        var cache = new MmapCache(budgetBytes: 2 * Size);
        var exporter = new MemfdExporter(cache);
        DmaBufHandle[] pool = [exporter.Allocate(Size), exporter.Allocate(Size), exporter.Allocate(Size)];
        try
        {
            for (int round = 0; round < 3; round++)
            {
                foreach (DmaBufHandle h in pool)
                {
                    h.MapCpu().Dispose();
                }
            }

            Assert.True(cache.Statistics.IsThrashing);
            Assert.Equal(0, cache.Statistics.Hits);
        }
        finally
        {
            Array.ForEach(pool, h => h.Dispose());
        }
    }

    [Fact]
    public void NegativeBudget_IsRejected() =>
        Assert.Throws<ArgumentOutOfRangeException>(() => new MmapCache(-1));
}

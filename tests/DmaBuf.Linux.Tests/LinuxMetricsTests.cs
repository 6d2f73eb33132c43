using DmaBuf.Testing;

namespace DmaBuf.Linux.Tests;

/// <summary>Tests that read the process-wide <c>DmaBuf.Linux</c> meter run alone, so every count is exactly their own.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class LinuxMeterCollection
{
    public const string Name = "linux-meter";
}

/// <summary>Every instrument of the <c>DmaBuf.Linux</c> meter, read through a <see cref="System.Diagnostics.Metrics.MeterListener"/>, with exact counts.</summary>
[Collection(LinuxMeterCollection.Name)]
public sealed class LinuxMetricsTests : IDisposable
{
    private const int Page = 4096;
    private readonly MeterRecorder _meter = new(LinuxMetrics.MeterName);

    public void Dispose() => _meter.Dispose();

    private long this[string name] => _meter[name];

    [Fact]
    public void TheMeter_PublishesEveryInstrument_UnderItsDocumentedName()
    {
        string[] expected =
        [
            "dmabuf.linux.mmap_cache.hits", "dmabuf.linux.mmap_cache.misses", "dmabuf.linux.mmap_cache.evictions", "dmabuf.linux.mmaps",
            "dmabuf.linux.munmaps", "dmabuf.linux.bytes_mapped", "dmabuf.linux.imports", "dmabuf.linux.import_cache.hits",
        ];

        Assert.Equal(expected.Order(StringComparer.Ordinal), _meter.Published);
    }

    [Fact]
    public void MmapCache_MissThenHits_OneMmapOfTheBuffersBytes_UnmappedAtRelease()
    {
        var exporter = new MemfdExporter(new MmapCache());
        DmaBufHandle handle = exporter.Allocate(4 * Page);
        for (int i = 0; i < 3; i++)
        {
            using CpuMapping map = handle.MapCpu();
        }

        Assert.Equal(1, this["dmabuf.linux.mmap_cache.misses"]);
        Assert.Equal(2, this["dmabuf.linux.mmap_cache.hits"]);
        Assert.Equal(1, this["dmabuf.linux.mmaps"]);
        Assert.Equal(4 * Page, this["dmabuf.linux.bytes_mapped"]);
        Assert.Equal(0, this["dmabuf.linux.munmaps"]); // cached while the buffer lives
        handle.Dispose();
        Assert.Equal(1, this["dmabuf.linux.munmaps"]);
    }

    [Fact]
    public void MmapCache_OverBudget_EvictsAndUnmaps()
    {
        var exporter = new MemfdExporter(new MmapCache(budgetBytes: 2 * Page));
        DmaBufHandle[] buffers = [.. Enumerable.Range(0, 3).Select(_ => exporter.Allocate(Page))];
        foreach (DmaBufHandle b in buffers)
        {
            using CpuMapping map = b.MapCpu();
        }

        Assert.Equal(3, this["dmabuf.linux.mmaps"]);
        Assert.Equal(1, this["dmabuf.linux.mmap_cache.evictions"]);
        Assert.Equal(1, this["dmabuf.linux.munmaps"]);
        Array.ForEach(buffers, b => b.Dispose());
        Assert.Equal(3, this["dmabuf.linux.munmaps"]);
    }

    [Fact]
    public void ImportCache_OneImportPerBuffer_ThenHits()
    {
        var cache = new MmapCache();
        using DmaBufHandle handle = new MemfdExporter(cache).Allocate(Page);
        var imports = new ImportCache(cache);
        SafeFdHandle fd = handle.Buffer.GetLinuxBuffer().Fd;

        using DmaBufHandle first = imports.Import(Interop.Libc.Duplicate(fd), Page);
        using DmaBufHandle second = imports.Import(Interop.Libc.Duplicate(fd), Page);
        using DmaBufHandle third = imports.Import(Interop.Libc.Duplicate(fd), Page);

        Assert.Equal(1, this["dmabuf.linux.imports"]);
        Assert.Equal(2, this["dmabuf.linux.import_cache.hits"]);
    }
}

using DmaBuf.Testing;

namespace DmaBuf.Tests;

/// <summary>
/// The tests that read the process-wide <c>DmaBuf</c> meter run alone (no other test of this assembly runs meanwhile),
/// so every count they see is exactly the work they did.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class MeterCollection
{
    public const string Name = "meter";
}

/// <summary>
/// Every instrument of the <c>DmaBuf</c> meter, read the way <c>dotnet-counters</c> and OpenTelemetry read it (a
/// <see cref="System.Diagnostics.Metrics.MeterListener"/>), with the exact count each operation must add.
/// </summary>
[Collection(MeterCollection.Name)]
public sealed class MetricsTests : IDisposable
{
    private readonly MeterRecorder _meter = new(DmaBufMetrics.MeterName);

    public void Dispose() => _meter.Dispose();

    private long this[string name] => _meter[name];

    [Fact]
    public void TheMeter_PublishesEveryInstrument_UnderItsDocumentedName()
    {
        string[] expected =
        [
            "dmabuf.exports", "dmabuf.releases", "dmabuf.maps", "dmabuf.unmaps", "dmabuf.bytes_mapped", "dmabuf.cache.hits",
            "dmabuf.cache.misses", "dmabuf.cache.evictions", "dmabuf.invalidations", "dmabuf.fences.signaled", "dmabuf.buffers.live",
        ];

        Assert.Equal(expected.Order(StringComparer.Ordinal), _meter.Published);
    }

    [Fact]
    public void ExportAndRelease_CountOnceEach_AndLiveBuffersGoesUpAndDown()
    {
        DmaBufHandle a = Make.Buffer(new TestExporter());
        DmaBufHandle b = Make.Buffer(new TestExporter());
        using DmaBufHandle dup = a.Duplicate();

        Assert.Equal(2, this["dmabuf.exports"]);
        Assert.Equal(2, this["dmabuf.buffers.live"]);
        a.Dispose();
        Assert.Equal(0, this["dmabuf.releases"]); // the duplicate still holds it
        b.Dispose();
        dup.Dispose();
        Assert.Equal(2, this["dmabuf.releases"]);
        Assert.Equal(0, this["dmabuf.buffers.live"]);
    }

    [Fact]
    public void MapAndUnmap_CountCallsAndBytes()
    {
        using DmaBufHandle handle = Make.Buffer(new TestExporter(), size: 16384);
        using (DmaBufAttachment attachment = handle.Attach(Make.Device()))
        {
            ScatterTable t = attachment.Map(DmaDirection.ToDevice);
            attachment.Unmap(t);
            attachment.Map(DmaDirection.FromDevice); // left mapped: detaching unmaps it
        }

        Assert.Equal(2, this["dmabuf.maps"]);
        Assert.Equal(2, this["dmabuf.unmaps"]);
        Assert.Equal(2 * 16384, this["dmabuf.bytes_mapped"]);
    }

    [Fact]
    public void ImportCache_CountsHitsAndMisses()
    {
        using var context = new ImportContext(Make.Device());
        using DmaBufHandle handle = Make.Buffer(new TestExporter());
        for (int i = 0; i < 3; i++)
        {
            using ImportedBuffer imported = context.Import(handle);
            imported.Map(DmaDirection.ToDevice);
        }

        // The first import misses twice (no import, no mapping) and maps; each import after it hits twice: the import
        // cache finds the object, the attachment's mapping cache the mapping.
        Assert.Equal(1, context.Misses);
        Assert.Equal(2, context.Hits);
        Assert.Equal(4, this["dmabuf.cache.hits"]);
        Assert.Equal(2, this["dmabuf.cache.misses"]);
        Assert.Equal(1, this["dmabuf.maps"]);
    }

    [Fact]
    public void DomainShare_HitsOfTheSharedMapping_AreCounted()
    {
        var space = new TestAddressSpace();
        using var shared = new SharedMappingCache(space);
        using var vpu = new ImportContext(new TestDevice("vpu", space), shared);
        using var display = new ImportContext(new TestDevice("display", space), shared);
        using DmaBufHandle handle = Make.Buffer(new TestExporter());
        using (ImportedBuffer i = vpu.Import(handle))
        {
            i.Map(DmaDirection.FromDevice);
        }

        long hitsBefore = this["dmabuf.cache.hits"];
        using (ImportedBuffer i = display.Import(handle))
        {
            i.Map(DmaDirection.ToDevice); // the vpu's mapping, shared through the domain
        }

        Assert.Equal(1, shared.Hits);
        Assert.Equal(1, shared.Misses);
        Assert.Equal(1, this["dmabuf.cache.hits"] - hitsBefore); // the display's import missed its own cache; the mapping hit
        Assert.Equal(1, this["dmabuf.maps"]);
        Assert.Equal(1, space.Maps);
    }

    [Fact]
    public void Budget_Evictions_AreCounted()
    {
        using var context = new ImportContext(Make.Device(), budgetBytes: 2 * 4096);
        DmaBufHandle[] buffers = [.. Enumerable.Range(0, 4).Select(_ => Make.Buffer(new TestExporter()))];
        foreach (DmaBufHandle b in buffers)
        {
            using ImportedBuffer imported = context.Import(b);
            imported.Map(DmaDirection.ToDevice);
        }

        Assert.Equal(2, this["dmabuf.cache.evictions"]);
        Array.ForEach(buffers, b => b.Dispose());
    }

    [Fact]
    public void Move_CountsTheInvalidatedEntries()
    {
        using var owner = new MetadataOwner("isp");
        using DmaBufHandle handle = Make.Buffer(new TestExporter());
        handle.Buffer.Metadata.GetOrAdd(new MetadataKey<string>("chain"), owner, _ => "chain", (_, _) => { });

        int invalidated = handle.Buffer.Move(_ => () => { });

        Assert.Equal(1, invalidated);
        Assert.Equal(1, this["dmabuf.invalidations"]);
    }

    [Fact]
    public void Fences_CountEachSignalOnce_WithOrWithoutAnError()
    {
        FenceContext timeline = FenceContext.Allocate("metrics");
        var ok = new Fence(timeline, 1);
        var failed = new Fence(timeline, 2);

        Assert.True(ok.Signal());
        Assert.False(ok.Signal()); // a second signal is not a second count
        Assert.True(failed.SignalWithError(-5));

        Assert.Equal(2, this["dmabuf.fences.signaled"]);
    }
}

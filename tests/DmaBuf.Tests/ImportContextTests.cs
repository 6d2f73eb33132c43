namespace DmaBuf.Tests;

public sealed class ImportContextTests
{
    [Fact]
    public void Import_SameBufferAgain_GivesSameObjectAndAttachment()
    {
        var device = Make.Device("display");
        using var context = new ImportContext(device);
        using DmaBufHandle handle = Make.Buffer(new TestExporter());

        ImportedBuffer first;
        using (first = context.Import(handle))
        {
        }

        using DmaBufHandle dup = handle.Duplicate();
        using ImportedBuffer second = context.Import(dup);

        Assert.Same(first, second);
        Assert.Same(first.Attachment, second.Attachment);
        Assert.Equal(1, context.Misses);
        Assert.Equal(1, context.Hits);
        Assert.Single(handle.Buffer.Attachments);
    }

    [Fact]
    public void Import_DoesNotKeepBufferAlive_AndIsReleasedWithIt()
    {
        var exporter = new TestExporter();
        var space = new TestAddressSpace();
        using var context = new ImportContext(new TestDevice("gpu", space));
        DmaBufHandle handle = Make.Buffer(exporter);
        ImportedBuffer imported;
        using (imported = context.Import(handle))
        {
            imported.Map(DmaDirection.ToDevice);
        }

        Assert.Equal(1, handle.Buffer.ReferenceCount);
        handle.Dispose();

        Assert.Equal(1, exporter.ReleaseCalls);
        Assert.True(imported.IsReleased);
        Assert.Equal(0, context.Count);
        Assert.Equal(0, context.CachedBytes);
        Assert.Empty(space.Live);
    }

    [Fact]
    public void Map_PerAttachment_CachesTheExporterMapping()
    {
        var space = new TestAddressSpace();
        using var context = new ImportContext(new TestDevice("vpu", space));
        using DmaBufHandle handle = Make.Buffer(new TestExporter(), size: 8192);

        ScatterTable a, b;
        using (ImportedBuffer imp = context.Import(handle))
        {
            a = imp.Map(DmaDirection.FromDevice);
        }

        using (ImportedBuffer imp = context.Import(handle))
        {
            b = imp.Map(DmaDirection.FromDevice);
        }

        Assert.Same(a, b);
        Assert.Equal(1, space.Maps);
        Assert.Equal(8192, context.CachedBytes);
    }

    [Fact]
    public void Map_PerAddressSpace_OneMappingForEveryDeviceInTheDomain()
    {
        var shared = new TestAddressSpace();
        var otherSpace = new TestAddressSpace();
        using var sharedCache = new SharedMappingCache(shared);
        using var otherCache = new SharedMappingCache(otherSpace);
        using var vpu = new ImportContext(new TestDevice("vpu", shared), sharedCache);
        using var display = new ImportContext(new TestDevice("display", shared), sharedCache);
        using var other = new ImportContext(new TestDevice("camera", otherSpace), otherCache);
        DmaBufHandle handle = Make.Buffer(new TestExporter());

        ScatterTable fromVpu, fromDisplay;
        using (ImportedBuffer i = vpu.Import(handle))
        {
            fromVpu = i.Map(DmaDirection.FromDevice);
        }

        using (ImportedBuffer i = display.Import(handle))
        {
            fromDisplay = i.Map(DmaDirection.ToDevice);
        }

        using (ImportedBuffer i = other.Import(handle))
        {
            Assert.NotSame(fromVpu, i.Map(DmaDirection.ToDevice));
        }

        Assert.Same(fromVpu, fromDisplay);
        Assert.Equal(1, shared.Maps);
        handle.Dispose();
        Assert.Empty(shared.Live);
    }

    [Fact]
    public void Budget_EvictsLeastRecentlyUsedFirst()
    {
        using var context = new ImportContext(Make.Device(), budgetBytes: 2 * 4096);
        DmaBufHandle[] buffers = [.. Enumerable.Range(0, 3).Select(_ => Make.Buffer(new TestExporter()))];
        var imports = new List<ImportedBuffer>();
        foreach (int i in new[] { 0, 1, 0, 2 })
        {
            using ImportedBuffer imp = context.Import(buffers[i]);
            imp.Map(DmaDirection.ToDevice);
            imports.Add(imp);
        }

        // Buffer 1 was least recently used when buffer 2 pushed the cache over budget.
        Assert.True(imports[1].IsReleased);
        Assert.False(imports[0].IsReleased);
        Assert.False(imports[3].IsReleased);
        Assert.Equal(1, context.Evictions);
        Assert.True(context.CachedBytes <= context.BudgetBytes);
        foreach (DmaBufHandle b in buffers)
        {
            b.Dispose();
        }
    }

    [Fact]
    public void Budget_NeverEvictsAnImportInUse()
    {
        using var context = new ImportContext(Make.Device(), budgetBytes: 4096);
        using DmaBufHandle a = Make.Buffer(new TestExporter());
        using DmaBufHandle b = Make.Buffer(new TestExporter());

        using ImportedBuffer first = context.Import(a);
        first.Map(DmaDirection.ToDevice);
        using ImportedBuffer second = context.Import(b);
        second.Map(DmaDirection.ToDevice);

        Assert.False(first.IsReleased);
        Assert.Equal(0, context.Evictions);
    }

    [Fact]
    public void Budget_SmallerThanWorkingSet_Thrashes()
    {
        using var context = new ImportContext(Make.Device(), budgetBytes: 3 * 4096);
        DmaBufHandle[] pool = [.. Enumerable.Range(0, 5).Select(_ => Make.Buffer(new TestExporter()))];
        for (int frame = 0; frame < 50; frame++)
        {
            using ImportedBuffer imp = context.Import(pool[frame % pool.Length]);
            imp.Map(DmaDirection.ToDevice);
        }

        Assert.True(context.IsThrashing);
        Assert.True(context.Evictions >= 40);
        foreach (DmaBufHandle b in pool)
        {
            b.Dispose();
        }
    }

    [Fact]
    public void Budget_LargerThanWorkingSet_DoesNotThrash()
    {
        using var context = new ImportContext(Make.Device(), budgetBytes: 8 * 4096);
        DmaBufHandle[] pool = [.. Enumerable.Range(0, 5).Select(_ => Make.Buffer(new TestExporter()))];
        for (int frame = 0; frame < 50; frame++)
        {
            using ImportedBuffer imp = context.Import(pool[frame % pool.Length]);
            imp.Map(DmaDirection.ToDevice);
        }

        Assert.False(context.IsThrashing);
        Assert.Equal(0, context.Evictions);
        foreach (DmaBufHandle b in pool)
        {
            b.Dispose();
        }
    }

    [Fact]
    public void Move_InvalidatesImportAndMapping_NextImportRebuilds()
    {
        var space = new TestAddressSpace();
        using var context = new ImportContext(new TestDevice("gpu", space));
        using DmaBufHandle handle = Make.Buffer(new TestExporter());
        ImportedBuffer before;
        using (before = context.Import(handle))
        {
            before.Map(DmaDirection.ToDevice);
        }

        handle.Buffer.Move(_ => () => { });

        Assert.True(before.IsReleased);
        Assert.Empty(space.Live);
        Assert.Equal(1, context.Invalidations);
        using ImportedBuffer after = context.Import(handle);
        after.Map(DmaDirection.ToDevice);
        Assert.NotSame(before, after);
        Assert.Equal(2, space.Maps);
    }

    [Fact]
    public void Move_PinnedAttachment_BlocksTheMove()
    {
        using DmaBufHandle handle = Make.Buffer(new TestExporter());
        using DmaBufAttachment attachment = handle.Attach(Make.Device("scanout"));
        attachment.Pin();

        InvalidOperationException e = Assert.Throws<InvalidOperationException>(() => handle.Buffer.Move(_ => () => { }));
        Assert.Contains("scanout", e.Message);

        attachment.Unpin();
        handle.Buffer.Move(_ => () => { });
    }

    [Fact]
    public void Move_StaticImporterWithMapping_Pins_DynamicImporterIsNotified()
    {
        using DmaBufHandle handle = Make.Buffer(new TestExporter());
        using (DmaBufAttachment staticImporter = handle.Attach(Make.Device()))
        {
            staticImporter.Map(DmaDirection.ToDevice);
            Assert.Throws<InvalidOperationException>(() => handle.Buffer.Move(_ => () => { }));
        }

        var importer = new RecordingImporter();
        using DmaBufAttachment dynamic = handle.Attach(Make.Device(), importer: importer);
        dynamic.MapCached(DmaDirection.ToDevice, out _);

        handle.Buffer.Move(_ => () => { });

        Assert.Equal([dynamic], importer.Notified);
        Assert.False(dynamic.HasCachedMapping);
    }

    [Fact]
    public void Dispose_Context_ReleasesEveryImport()
    {
        var space = new TestAddressSpace();
        var context = new ImportContext(new TestDevice("enc", space));
        using DmaBufHandle a = Make.Buffer(new TestExporter());
        using DmaBufHandle b = Make.Buffer(new TestExporter());
        foreach (DmaBufHandle h in new[] { a, b })
        {
            using ImportedBuffer imp = context.Import(h);
            imp.Map(DmaDirection.ToDevice);
        }

        context.Dispose();

        Assert.Empty(space.Live);
        Assert.Empty(a.Buffer.Attachments);
        Assert.Throws<ObjectDisposedException>(() => context.Import(a));
    }

    private sealed class RecordingImporter : IDmaBufImporter
    {
        public List<DmaBufAttachment> Notified { get; } = [];

        public void MoveNotify(DmaBufAttachment attachment) => Notified.Add(attachment);
    }


    // Lifetimes issue 4: a remap in another direction replaces the import's mapping; before, it was charged again and
    // CachedBytes doubled, so budgets evicted too early.
    [Fact]
    public void Map_SecondDirection_IsChargedOnce()
    {
        using var context = new ImportContext(Make.Device(), budgetBytes: 3 * 4096);
        using DmaBufHandle handle = Make.Buffer(new TestExporter(), size: 2 * 4096);

        using (ImportedBuffer imp = context.Import(handle))
        {
            imp.Map(DmaDirection.FromDevice);
            imp.Map(DmaDirection.ToDevice); // remapped bidirectional
        }

        Assert.Equal(2 * 4096, context.CachedBytes);
        Assert.Equal(0, context.Evictions);
        Assert.Equal(2, context.MapMisses);
    }

    // Lifetimes issue 4: Map after the use ended could evict its own import and return addresses already unmapped.
    [Fact]
    public void Map_AfterUseEnded_Throws_AndNeverReturnsUnmappedAddresses()
    {
        var space = new TestAddressSpace();
        using var context = new ImportContext(new TestDevice("gpu", space), budgetBytes: 4096);
        using DmaBufHandle a = Make.Buffer(new TestExporter());
        using DmaBufHandle b = Make.Buffer(new TestExporter());
        ImportedBuffer first = context.Import(a);
        first.Map(DmaDirection.ToDevice);
        first.Dispose();

        InvalidOperationException e = Assert.Throws<InvalidOperationException>(() => first.Map(DmaDirection.ToDevice));
        Assert.Contains("Import again", e.Message, StringComparison.OrdinalIgnoreCase);

        // Over budget with the first import not in use: it is the one evicted, never the import being mapped.
        using (ImportedBuffer second = context.Import(b))
        {
            ScatterTable t = second.Map(DmaDirection.ToDevice);
            Assert.Contains(t.Segments[0].Address, space.Live);
            Assert.False(second.IsReleased);
        }

        Assert.True(first.IsReleased);
        Assert.Equal(1, context.Evictions);
    }

    [Fact]
    public void Import_InUse_IsNeverEvicted_EvenOverBudget()
    {
        using var context = new ImportContext(Make.Device(), budgetBytes: 4096);
        using DmaBufHandle a = Make.Buffer(new TestExporter());
        using DmaBufHandle b = Make.Buffer(new TestExporter());
        using ImportedBuffer first = context.Import(a);
        first.Map(DmaDirection.ToDevice);
        using (ImportedBuffer second = context.Import(b))
        {
            second.Map(DmaDirection.ToDevice);
            Assert.False(first.IsReleased);
            Assert.Equal(2 * 4096, context.CachedBytes); // over budget while both are in use
        }

        Assert.False(first.IsReleased);
        Assert.Equal(4096, context.CachedBytes); // the one that ended its use was evicted
    }

    [Fact]
    public void Constructor_PerAddressSpaceWithoutSharedCache_SaysWhatToPass()
    {
        ArgumentException e = Assert.Throws<ArgumentException>(() => new ImportContext(Make.Device(), ImportMappingMode.PerAddressSpace));
        Assert.Contains("SharedMappingCache", e.Message, StringComparison.Ordinal);
    }

    // The hit path (import, map from the cache, end the use) is the one run per frame: it must allocate nothing, in either
    // mode, including the budget's bookkeeping when a use ends under budget.
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Import_HitPath_AllocatesNothing(bool perAddressSpace)
    {
        var space = new TestAddressSpace();
        using var shared = new SharedMappingCache(space, budgetBytes: 1L << 20);
        using var context = perAddressSpace
            ? new ImportContext(new TestDevice("display", space), shared)
            : new ImportContext(new TestDevice("display", space), budgetBytes: 1L << 20);
        using DmaBufHandle handle = Make.Buffer(new TestExporter());
        for (int i = 0; i < 3; i++) // the miss, then warm every lazily made piece
        {
            using ImportedBuffer imp = context.Import(handle);
            imp.Map(DmaDirection.ToDevice);
        }

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 1000; i++)
        {
            using ImportedBuffer imp = context.Import(handle);
            imp.Map(DmaDirection.ToDevice);
        }

        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }
}

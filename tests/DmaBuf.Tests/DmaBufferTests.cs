namespace DmaBuf.Tests;

public sealed class DmaBufferTests
{
    [Fact]
    public void Dispose_LastHandle_ReleasesExactlyOnce()
    {
        var exporter = new TestExporter();
        DmaBufHandle handle = Make.Buffer(exporter);
        DmaBuffer buffer = handle.Buffer;

        handle.Dispose();
        handle.Dispose();

        Assert.Equal(1, exporter.ReleaseCalls);
        Assert.Equal(DmaBufState.Released, buffer.State);
    }

    [Fact]
    public void Duplicate_KeepsBufferAlive_UntilLastReferenceGoes()
    {
        var exporter = new TestExporter();
        DmaBufHandle first = Make.Buffer(exporter);
        DmaBufHandle second = first.Duplicate();
        DmaBufHandle third = second.Duplicate();

        first.Dispose();
        second.Dispose();
        Assert.Equal(0, exporter.ReleaseCalls);
        Assert.Equal(1, third.Buffer.ReferenceCount);

        third.Dispose();
        Assert.Equal(1, exporter.ReleaseCalls);
    }

    [Fact]
    public void TryAddReference_LiveBuffer_ReturnsANewReference()
    {
        var exporter = new TestExporter();
        DmaBufHandle first = Make.Buffer(exporter);

        DmaBufHandle? second = first.Buffer.TryAddReference();
        first.Dispose();

        Assert.NotNull(second);
        Assert.Equal(0, exporter.ReleaseCalls);
        second.Dispose();
        Assert.Equal(1, exporter.ReleaseCalls);
    }

    [Fact]
    public void TryAddReference_ReleasedBuffer_ReturnsNullAndNeverResurrects()
    {
        var exporter = new TestExporter();
        DmaBufHandle handle = Make.Buffer(exporter);
        DmaBuffer buffer = handle.Buffer;
        DmaBufHandle? duringRelease = null;
        exporter.OnRelease = b => duringRelease = b.TryAddReference();

        handle.Dispose();

        Assert.Null(duringRelease);
        Assert.Null(buffer.TryAddReference());
        Assert.Equal(1, exporter.ReleaseCalls);
    }

    [Fact]
    public void DisposedHandle_Use_ThrowsObjectDisposed()
    {
        DmaBufHandle handle = Make.Buffer(new TestExporter());
        handle.Dispose();

        Assert.Throws<ObjectDisposedException>(() => handle.Buffer);
        Assert.Throws<ObjectDisposedException>(() => handle.Duplicate());
        Assert.Throws<ObjectDisposedException>(() => handle.Attach(Make.Device()));
        Assert.Throws<ObjectDisposedException>(() => handle.BeginCpuAccess(CpuAccess.Read));
    }

    [Fact]
    public void Release_ManyThreadsDisposingDuplicates_ReleasesExactlyOnce()
    {
        for (int round = 0; round < 50; round++)
        {
            var exporter = new TestExporter();
            DmaBufHandle root = Make.Buffer(exporter);
            DmaBufHandle[] copies = [.. Enumerable.Range(0, 64).Select(_ => root.Duplicate())];
            root.Dispose();

            Parallel.ForEach(copies, new ParallelOptions { MaxDegreeOfParallelism = 4 }, c => c.Dispose());

            Assert.Equal(1, exporter.ReleaseCalls);
        }
    }

    [Fact]
    public void Release_Order_LeavesRegistryBeforeExporterRelease()
    {
        var registry = new BufferRegistry();
        var exporter = new TestExporter();
        DmaBufHandle handle = Make.Buffer(exporter, registry);
        long id = handle.BufferId;
        bool listedDuringRelease = true;
        DmaBufState stateDuringRelease = DmaBufState.Live;
        exporter.OnRelease = b =>
        {
            listedDuringRelease = registry.Contains(id);
            stateDuringRelease = b.State;
        };

        handle.Dispose();

        Assert.False(listedDuringRelease);
        Assert.Equal(DmaBufState.Releasing, stateDuringRelease);
        Assert.Equal(0, registry.Count);
    }

    [Fact]
    public void Release_RunsWithNoFrameworkLockHeld()
    {
        var registry = new BufferRegistry();
        var exporter = new TestExporter();
        DmaBufHandle handle = Make.Buffer(exporter, registry);
        DmaBufAttachment attachment = handle.Attach(Make.Device());
        handle.Dispose();
        bool otherThreadGotBufferLock = false;
        bool otherThreadListed = false;
        int heldHere = -1;
        exporter.OnRelease = b =>
        {
            heldHere = OrderedLock.HeldByCurrentThread;
            // Another thread must be able to take every framework lock while the callback runs.
            otherThreadGotBufferLock = Task.Run(() =>
            {
                using OrderedLock.Scope s = b.Lock.Enter();
            }).Wait(TimeSpan.FromSeconds(10));
            otherThreadListed = Task.Run(() => registry.List()).Wait(TimeSpan.FromSeconds(10));
        };

        // The attachment holds the last reference: detach releases the buffer.
        attachment.Dispose();

        Assert.Equal(1, exporter.ReleaseCalls);
        Assert.Equal(0, heldHere);
        Assert.True(otherThreadGotBufferLock);
        Assert.True(otherThreadListed);
    }

    [Fact]
    public void Export_InvalidName_TakesNothingOver()
    {
        var exporter = new TestExporter();
        var registry = new BufferRegistry();

        Assert.Throws<ArgumentException>(() => Make.Buffer(exporter, registry, name: new string('x', 40)));

        Assert.Equal(0, exporter.ReleaseCalls);
        Assert.Equal(0, registry.Count);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-4096)]
    public void Export_NonPositiveSize_Throws(long size) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => Make.Buffer(new TestExporter(), size: size));

    [Fact]
    public void Name_SetValidAndInvalid()
    {
        using DmaBufHandle handle = Make.Buffer(new TestExporter());
        handle.Buffer.Name = "vpu-frame-3";
        Assert.Equal("vpu-frame-3", handle.Buffer.Name);

        Assert.Throws<ArgumentException>(() => handle.Buffer.Name = new string('é', 16)); // 32 UTF-8 bytes
        Assert.Throws<ArgumentException>(() => handle.Buffer.Name = "a\nb");
        Assert.Equal("vpu-frame-3", handle.Buffer.Name);
        handle.Buffer.Name = null;
        Assert.Null(handle.Buffer.Name);
    }

    [Fact]
    public void Id_IsUniqueAndNeverReused()
    {
        var exporter = new TestExporter();
        var seen = new HashSet<long>();
        for (int i = 0; i < 100; i++)
        {
            using DmaBufHandle h = Make.Buffer(exporter);
            Assert.True(seen.Add(h.BufferId));
        }
    }


    // Rule 10: a factory running on the buffer's behalf holds the release's last step back. Before the release barrier,
    // disposing the last handle inside the factory ran exporter.Release there and then, under the factory's feet.
    [Fact]
    public void Release_DuringMetadataFactory_WaitsForTheFactory_ThenReleasesOnce()
    {
        var exporter = new TestExporter();
        using var owner = new MetadataOwner("driver");
        DmaBufHandle handle = Make.Buffer(exporter);
        DmaBuffer buffer = handle.Buffer;
        var key = new MetadataKey<string>("chain");
        int releasesSeenByFactory = -1;
        var releases = new List<MetadataReleaseReason>();

        Assert.Throws<ObjectDisposedException>(() => buffer.Metadata.GetOrAdd(key, owner, b =>
        {
            handle.Dispose(); // the last reference goes while the factory is still using the buffer
            releasesSeenByFactory = exporter.ReleaseCalls;
            return "chain";
        }, (_, r) => releases.Add(r)));

        Assert.Equal(0, releasesSeenByFactory);
        Assert.Equal(1, exporter.ReleaseCalls);
        Assert.Equal(DmaBufState.Released, buffer.State);
        Assert.Equal([MetadataReleaseReason.Removed], releases); // made for a buffer that went: given back, never stored
        Assert.Equal(0, owner.EntryCount);
    }

    // Rule 1: every entry's release, whoever claimed it, runs before exporter.Release. Before, an owner teardown that had
    // claimed an entry could still be inside its callback when the buffer's release freed the memory.
    [Fact]
    public void Release_DuringOwnerTeardownCallback_WaitsForTheCallback()
    {
        var exporter = new TestExporter();
        var owner = new MetadataOwner("driver");
        DmaBufHandle handle = Make.Buffer(exporter);
        DmaBuffer buffer = handle.Buffer;
        int releasesSeenInCallback = -1;
        buffer.Metadata.GetOrAdd(new MetadataKey<string>("chain"), owner, _ => "chain", (_, r) =>
        {
            Assert.Equal(MetadataReleaseReason.OwnerTeardown, r);
            handle.Dispose();
            releasesSeenInCallback = exporter.ReleaseCalls;
        });

        owner.Dispose();

        Assert.Equal(0, releasesSeenInCallback);
        Assert.Equal(1, exporter.ReleaseCalls);
        Assert.Equal(DmaBufState.Released, buffer.State);
    }

    // Rule 11: a move whose relocation fails changes nothing. Before, the entries were detached first and lost without
    // their callbacks, and the later release threw and leaked the pages.
    [Fact]
    public void Move_RelocationFails_LeavesEntriesAndMappingsAsTheyWere()
    {
        var exporter = new TestExporter();
        var space = new TestAddressSpace();
        using var context = new ImportContext(new TestDevice("gpu", space));
        using var owner = new MetadataOwner("driver");
        DmaBufHandle handle = Make.Buffer(exporter);
        DmaBuffer buffer = handle.Buffer;
        var releases = new List<MetadataReleaseReason>();
        buffer.Metadata.GetOrAdd(new MetadataKey<string>("chain"), owner, _ => "chain", (_, r) => releases.Add(r));
        ScatterTable mapped;
        using (ImportedBuffer imp = context.Import(handle))
        {
            mapped = imp.Map(DmaDirection.ToDevice);
        }

        Assert.Throws<OutOfMemoryException>(() => buffer.Move(_ => throw new OutOfMemoryException("device-local heap full")));

        Assert.Equal(2, buffer.Metadata.Count);
        Assert.Empty(releases);
        Assert.Single(space.Live);
        using (ImportedBuffer imp = context.Import(handle))
        {
            Assert.Same(mapped, imp.Map(DmaDirection.ToDevice)); // still the cached mapping
        }

        handle.Dispose();
        Assert.Equal([MetadataReleaseReason.BufferReleased], releases);
        Assert.Equal(1, exporter.ReleaseCalls);
        Assert.Empty(space.Live);
    }

    // Rule 11: a throwing release callback does not stop the others or the release. Before, the first exception ended
    // the release: older entries were never released and exporter.Release never ran.
    [Fact]
    public void Release_CallbackThrows_OthersAndExporterStillRun_OneAggregateReportsIt()
    {
        var exporter = new TestExporter();
        using var owner = new MetadataOwner("driver");
        DmaBufHandle handle = Make.Buffer(exporter);
        DmaBuffer buffer = handle.Buffer;
        var ran = new List<string>();
        buffer.Metadata.GetOrAdd(new MetadataKey<string>("older"), owner, _ => "older", (v, _) => ran.Add(v));
        buffer.Metadata.GetOrAdd(new MetadataKey<string>("newer"), owner, _ => "newer", (v, _) =>
        {
            ran.Add(v);
            throw new InvalidOperationException("driver bug");
        });

        AggregateException e = Assert.Throws<AggregateException>(handle.Dispose);

        Assert.Equal("driver bug", Assert.Single(e.InnerExceptions).Message);
        Assert.Equal(["newer", "older"], ran);
        Assert.Equal(1, exporter.ReleaseCalls);
        Assert.Equal(DmaBufState.Released, buffer.State);
        Assert.Equal(0, owner.EntryCount);
    }

    // Rule 10 and issue 3 of the lifetimes list: a value made for the old placement while the buffer moved is never
    // stored. Before, the factory's stale mapping was added after the move and survived it.
    [Fact]
    public void Move_DuringMetadataFactory_InvalidatesTheStaleValue_AndCreatesAgain()
    {
        using var owner = new MetadataOwner("driver");
        using DmaBufHandle handle = Make.Buffer(new TestExporter());
        DmaBuffer buffer = handle.Buffer;
        int placement = 0;
        int calls = 0;
        var released = new List<(string Value, MetadataReleaseReason Reason)>();

        string stored = buffer.Metadata.GetOrAdd(new MetadataKey<string>("iova"), owner, _ =>
        {
            string value = $"mapping of placement {placement}";
            if (calls++ == 0)
            {
                buffer.Move(_ =>
                {
                    placement++;
                    return () => { };
                });
            }

            return value;
        }, (v, r) => released.Add((v, r)));

        Assert.Equal("mapping of placement 1", stored);
        Assert.Equal(2, calls);
        Assert.Equal([("mapping of placement 0", MetadataReleaseReason.Invalidated)], released);
    }
}

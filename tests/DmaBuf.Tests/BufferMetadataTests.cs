using System.Runtime.CompilerServices;

namespace DmaBuf.Tests;

public sealed class BufferMetadataTests
{
    private static readonly MetadataKey<Box> s_key = new("test");
    private static readonly MetadataKey<Box> s_stable = new("stable", dependsOnPlacement: false);

    private sealed class Box
    {
        public List<MetadataReleaseReason> Releases { get; } = [];
    }

    private static Box Add(DmaBufHandle handle, MetadataOwner owner, MetadataKey<Box>? key = null) =>
        handle.Buffer.Metadata.GetOrAdd(key ?? s_key, owner, _ => new Box(), (b, reason) => b.Releases.Add(reason));

    [Fact]
    public void Release_BufferFirst_RunsCallbackOnce_BeforeExporterRelease()
    {
        var exporter = new TestExporter();
        using var owner = new MetadataOwner("vpu");
        DmaBufHandle handle = Make.Buffer(exporter);
        Box box = Add(handle, owner);
        int exporterReleasesWhenCallbackRan = -1;
        handle.Buffer.Metadata.GetOrAdd(new MetadataKey<Box>("probe"), owner, _ => new Box(),
            (_, _) => exporterReleasesWhenCallbackRan = exporter.ReleaseCalls);

        handle.Dispose();
        owner.Dispose();

        Assert.Equal([MetadataReleaseReason.BufferReleased], box.Releases);
        Assert.Equal(0, exporterReleasesWhenCallbackRan);
        Assert.Equal(0, owner.EntryCount);
    }

    [Fact]
    public void Release_OwnerFirst_RunsCallbackOnce_AndBufferReleaseDoesNotRepeatIt()
    {
        var owner = new MetadataOwner("display");
        DmaBufHandle handle = Make.Buffer(new TestExporter());
        Box box = Add(handle, owner);

        owner.Dispose();
        Assert.Equal(0, handle.Buffer.Metadata.Count);
        handle.Dispose();

        Assert.Equal([MetadataReleaseReason.OwnerTeardown], box.Releases);
    }

    [Fact]
    public void Release_RemovedFirst_RunsCallbackOnce()
    {
        using var owner = new MetadataOwner("gpu");
        DmaBufHandle handle = Make.Buffer(new TestExporter());
        Box box = Add(handle, owner);

        Assert.True(handle.Buffer.Metadata.Remove(s_key, owner));
        Assert.False(handle.Buffer.Metadata.Remove(s_key, owner));
        handle.Dispose();
        owner.Dispose();

        Assert.Equal([MetadataReleaseReason.Removed], box.Releases);
        Assert.Equal(0, owner.EntryCount);
    }

    [Fact]
    public void Release_MovedFirst_InvalidatesPlacementEntriesOnly_AndFreesOldPlacementAfterThem()
    {
        using var owner = new MetadataOwner("isp");
        DmaBufHandle handle = Make.Buffer(new TestExporter());
        Box placed = Add(handle, owner);
        Box stable = Add(handle, owner, s_stable);
        var order = new List<string>();
        handle.Buffer.Metadata.GetOrAdd(new MetadataKey<Box>("order"), owner, _ => new Box(), (_, _) => order.Add("invalidate"));

        int invalidated = handle.Buffer.Move(_ =>
        {
            order.Add("relocate");
            return () => order.Add("free old");
        });
        handle.Dispose();

        Assert.Equal(2, invalidated);
        Assert.Equal(["relocate", "invalidate", "free old"], order);
        Assert.Equal([MetadataReleaseReason.Invalidated], placed.Releases);
        Assert.Equal([MetadataReleaseReason.BufferReleased], stable.Releases);
    }

    [Fact]
    public void GetOrAdd_SameKeyAndOwner_ReturnsSameValue_DifferentOwner_Separate()
    {
        using var a = new MetadataOwner("a");
        using var b = new MetadataOwner("b");
        using DmaBufHandle handle = Make.Buffer(new TestExporter());

        Box first = Add(handle, a);
        Assert.Same(first, Add(handle, a));
        Assert.NotSame(first, Add(handle, b));
        Assert.True(handle.Buffer.Metadata.TryGet(s_key, a, out Box? got));
        Assert.Same(first, got);
        Assert.Equal(2, handle.Buffer.Metadata.Count);
    }

    [Fact]
    public void GetOrAdd_AfterOwnerDisposed_ThrowsWithoutCreating()
    {
        var owner = new MetadataOwner("gone");
        owner.Dispose();
        using DmaBufHandle handle = Make.Buffer(new TestExporter());
        Box? made = null;

        Assert.Throws<ObjectDisposedException>(() => handle.Buffer.Metadata.GetOrAdd(s_key, owner,
            _ => made = new Box(), (b, r) => b.Releases.Add(r)));
        Assert.Null(made);
        Assert.Equal(0, handle.Buffer.Metadata.Count);
    }

    [Fact]
    public void GetOrAdd_OwnerDisposedDuringFactory_ReleasesTheNewValueAndThrows()
    {
        var owner = new MetadataOwner("going");
        using DmaBufHandle handle = Make.Buffer(new TestExporter());
        Box? made = null;

        Assert.Throws<ObjectDisposedException>(() => handle.Buffer.Metadata.GetOrAdd(s_key, owner,
            _ =>
            {
                owner.Dispose();
                return made = new Box();
            },
            (b, r) => b.Releases.Add(r)));
        Assert.Equal([MetadataReleaseReason.Removed], made!.Releases);
        Assert.Equal(0, handle.Buffer.Metadata.Count);
    }

    [Fact]
    public void Callbacks_RunWithNoLockHeld()
    {
        using var owner = new MetadataOwner("o");
        DmaBufHandle handle = Make.Buffer(new TestExporter());
        DmaBuffer buffer = handle.Buffer;
        int held = -1;
        bool otherThreadLocked = false;
        buffer.Metadata.GetOrAdd(s_key, owner, _ => new Box(), (_, _) =>
        {
            held = OrderedLock.HeldByCurrentThread;
            otherThreadLocked = Task.Run(() =>
            {
                using OrderedLock.Scope s = buffer.Lock.Enter();
            }).Wait(TimeSpan.FromSeconds(10));
        });

        handle.Dispose();

        Assert.Equal(0, held);
        Assert.True(otherThreadLocked);
    }

    [Fact]
    public void Entries_DoNotKeepTheBufferAlive()
    {
        using var owner = new MetadataOwner("long-lived driver");
        var exporter = new TestExporter();
        var device = Make.Device();
        WeakReference weak = CreateAndDrop(exporter, owner, device);

        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();

        Assert.Equal(1, exporter.ReleaseCalls);
        Assert.Equal(0, owner.EntryCount);
        Assert.False(weak.IsAlive, "an entry or its owner kept the released buffer reachable");
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static WeakReference CreateAndDrop(TestExporter exporter, MetadataOwner owner, TestDevice device)
    {
        DmaBufHandle handle = Make.Buffer(exporter);
        Add(handle, owner);
        handle.Buffer.Metadata.GetOrAddMapping(new MetadataKey<CachedMapping>("map"), owner, device, DmaDirection.ToDevice, out _);
        var weak = new WeakReference(handle.Buffer);
        handle.Dispose();
        return weak;
    }

    [Fact]
    public void CachedMapping_HoldsNoReference_AndIsUnmappedBeforeExporterRelease()
    {
        var exporter = new TestExporter();
        using var owner = new MetadataOwner("vpu driver");
        var space = new TestAddressSpace();
        DmaBufHandle handle = Make.Buffer(exporter);
        var key = new MetadataKey<CachedMapping>("iommu mapping");

        CachedMapping m = handle.Buffer.Metadata.GetOrAddMapping(key, owner, new TestDevice("vpu", space), DmaDirection.FromDevice, out bool created);
        CachedMapping again = handle.Buffer.Metadata.GetOrAddMapping(key, owner, new TestDevice("vpu", space), DmaDirection.FromDevice, out bool createdAgain);

        Assert.True(created);
        Assert.False(createdAgain);
        Assert.Same(m, again);
        Assert.Equal(1, handle.Buffer.ReferenceCount);
        Assert.False(m.Attachment.HoldsReference);
        handle.Dispose();
        Assert.True(m.IsReleased);
        Assert.Empty(space.Live);
        Assert.Equal(["attach", "map", "unmap", "detach", "release"], exporter.Calls);
    }

    [Fact]
    public void OwnerAndBufferReleasedConcurrently_EachCallbackRunsExactlyOnce()
    {
        for (int round = 0; round < 200; round++)
        {
            var owner = new MetadataOwner("race");
            DmaBufHandle[] handles = [.. Enumerable.Range(0, 8).Select(_ => Make.Buffer(new TestExporter()))];
            int calls = 0;
            foreach (DmaBufHandle h in handles)
            {
                h.Buffer.Metadata.GetOrAdd(s_key, owner, _ => new Box(), (_, _) => Interlocked.Increment(ref calls));
            }

            Parallel.Invoke(
                () => owner.Dispose(),
                () =>
                {
                    foreach (DmaBufHandle h in handles)
                    {
                        h.Dispose();
                    }
                });

            Assert.Equal(8, calls);
        }
    }
}

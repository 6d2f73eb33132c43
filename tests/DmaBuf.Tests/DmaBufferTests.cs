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
}

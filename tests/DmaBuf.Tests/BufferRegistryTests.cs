using System.Diagnostics.Metrics;

namespace DmaBuf.Tests;

public sealed class BufferRegistryTests
{
    [Fact]
    public void List_ShowsLiveBuffersWithAttachmentsAndMappings()
    {
        var registry = new BufferRegistry();
        var exporter = new TestExporter();
        using DmaBufHandle one = Make.Buffer(exporter, registry, size: 8192, name: "frame-0");
        using DmaBufHandle two = Make.Buffer(exporter, registry, size: 4096);
        using DmaBufAttachment a = one.Attach(Make.Device("vpu"));
        using DmaBufAttachment b = one.Attach(Make.Device("display"));
        a.Map(DmaDirection.FromDevice);

        IReadOnlyList<BufferInfo> list = registry.List();

        Assert.Equal(2, list.Count);
        BufferInfo first = list[0];
        Assert.Equal(one.BufferId, first.Id);
        Assert.Equal("frame-0", first.Name);
        Assert.Equal(8192, first.Size);
        Assert.Equal("test", first.Exporter);
        Assert.Equal(3, first.ReferenceCount);
        Assert.Equal(["vpu", "display"], first.AttachedDevices);
        Assert.Equal(1, first.Mappings);
        string text = registry.FormatBufInfo();
        Assert.Contains("frame-0", text);
        Assert.Contains("Total 2 objects, 12288 bytes, 2 attachments", text);
    }

    [Fact]
    public void List_DoesNotKeepBuffersAlive_AndNeverShowsReleasedOnes()
    {
        var registry = new BufferRegistry();
        var exporter = new TestExporter();
        DmaBufHandle handle = Make.Buffer(exporter, registry);
        Assert.Single(registry.List());
        Assert.Equal(1, handle.Buffer.ReferenceCount);

        handle.Dispose();

        Assert.Empty(registry.List());
        Assert.Equal(1, exporter.ReleaseCalls);
    }

    [Fact]
    public async Task List_ConcurrentWithReleases_SeesOnlyLiveBuffers()
    {
        var registry = new BufferRegistry();
        var exporter = new TestExporter();
        var released = new System.Collections.Concurrent.ConcurrentDictionary<long, bool>();
        exporter.OnRelease = b => released[b.Id] = true;
        using var stop = new CancellationTokenSource();
        int violations = 0;
        Task lister = Task.Run(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                // Anything released before the walk starts must not be in it.
                var releasedBefore = new HashSet<long>(released.Keys);
                foreach (BufferInfo info in registry.List())
                {
                    if (releasedBefore.Contains(info.Id))
                    {
                        Interlocked.Increment(ref violations);
                    }
                }
            }
        }, TestContext.Current.CancellationToken);

        for (int i = 0; i < 2000; i++)
        {
            DmaBufHandle h = Make.Buffer(exporter, registry);
            h.Dispose();
        }

        stop.Cancel();
        await lister;
        Assert.Equal(0, violations);
        Assert.Equal(2000, exporter.ReleaseCalls);
    }

    [Fact]
    public void Meter_CountsMapsAndUnmaps()
    {
        long maps = 0, unmaps = 0, bytes = 0;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == DmaBufMetrics.MeterName)
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, _, _) =>
        {
            switch (instrument.Name)
            {
                case "dmabuf.maps": Interlocked.Add(ref maps, value); break;
                case "dmabuf.unmaps": Interlocked.Add(ref unmaps, value); break;
                case "dmabuf.bytes_mapped": Interlocked.Add(ref bytes, value); break;
            }
        });
        listener.Start();

        using (DmaBufHandle handle = Make.Buffer(new TestExporter(), size: 16384))
        using (DmaBufAttachment a = handle.Attach(Make.Device()))
        {
            ScatterTable t = a.Map(DmaDirection.ToDevice);
            a.Unmap(t);
            a.Map(DmaDirection.ToDevice);
        }

        // Other tests may run in parallel and map too, so the counts are lower bounds.
        Assert.True(maps >= 2);
        Assert.True(unmaps >= 2);
        Assert.True(bytes >= 2 * 16384);
    }
}

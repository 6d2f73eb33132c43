namespace DmaBuf.Tests;

public sealed class DmaBufAttachmentTests
{
    [Fact]
    public void Attachment_HoldsReference_BufferReleasedOnlyAfterDetach()
    {
        var exporter = new TestExporter();
        DmaBufHandle handle = Make.Buffer(exporter);
        DmaBuffer buffer = handle.Buffer;
        DmaBufAttachment a = handle.Attach(Make.Device("vpu"));
        DmaBufAttachment b = handle.Attach(Make.Device("display"));

        handle.Dispose();
        Assert.Equal(0, exporter.ReleaseCalls);
        Assert.Equal(DmaBufState.Live, buffer.State);
        Assert.Equal(2, buffer.ReferenceCount);

        a.Dispose();
        Assert.Equal(0, exporter.ReleaseCalls);
        b.Dispose();
        Assert.Equal(1, exporter.ReleaseCalls);
        Assert.Equal(2, exporter.DetachCalls);
    }

    [Fact]
    public void Attach_ExporterRefuses_DropsTheReference()
    {
        var exporter = new TestExporter { RefuseAttach = true };
        using DmaBufHandle handle = Make.Buffer(exporter);

        Assert.Throws<NotSupportedException>(() => handle.Attach(Make.Device()));

        Assert.Equal(1, handle.Buffer.ReferenceCount);
        Assert.Empty(handle.Buffer.Attachments);
    }

    [Fact]
    public void Map_ReturnsDeviceAddressesFromTheAddressSpace()
    {
        using DmaBufHandle handle = Make.Buffer(new TestExporter(), size: 3 * 4096);
        var space = new TestAddressSpace();
        using DmaBufAttachment attachment = handle.Attach(new TestDevice("gpu", space), importerPrivate: "mine");

        ScatterTable table = attachment.Map(DmaDirection.ToDevice);

        Assert.Equal("mine", attachment.ImporterPrivate);
        Assert.Equal(3UL * 4096, table.TotalLength);
        Assert.Contains(table.Segments[0].Address, space.Live);
        Assert.NotEqual(0x8000_0000UL, table.Segments[0].Address);
        attachment.Unmap(table);
        Assert.Empty(space.Live);
    }

    [Fact]
    public void Unmap_TableNotMappedHere_Throws()
    {
        using DmaBufHandle handle = Make.Buffer(new TestExporter());
        using DmaBufAttachment a = handle.Attach(Make.Device());
        using DmaBufAttachment b = handle.Attach(Make.Device());
        ScatterTable fromB = b.Map(DmaDirection.Bidirectional);

        Assert.Throws<ArgumentException>(() => a.Unmap(fromB));
        Assert.Throws<ArgumentException>(() => a.Unmap(ScatterTable.Single(0, 4096)));
        b.Unmap(fromB);
        Assert.Throws<ArgumentException>(() => b.Unmap(fromB));
    }

    [Fact]
    public void Dispose_WithLiveMappings_UnmapsThemBeforeDetach()
    {
        var exporter = new TestExporter();
        using DmaBufHandle handle = Make.Buffer(exporter);
        var space = new TestAddressSpace();
        DmaBufAttachment attachment = handle.Attach(new TestDevice("isp", space));
        attachment.Map(DmaDirection.FromDevice);
        attachment.Map(DmaDirection.FromDevice);

        attachment.Dispose();

        Assert.Empty(space.Live);
        Assert.Equal(["attach", "map", "map", "unmap", "unmap", "detach"], exporter.Calls);
        Assert.Throws<ObjectDisposedException>(() => attachment.Map(DmaDirection.FromDevice));
    }

    [Fact]
    public void Map_ExporterRunsUnderBufferLock_AndMayNestAddressSpaceLock()
    {
        var exporter = new TestExporter();
        using DmaBufHandle handle = Make.Buffer(exporter);
        bool held = false;
        exporter.OnMap = a => held = a.Buffer.Lock.IsHeldByCurrentThread;
        using DmaBufAttachment attachment = handle.Attach(Make.Device());

        attachment.Map(DmaDirection.ToDevice);

        Assert.True(held);
    }
}

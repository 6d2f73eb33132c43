namespace DmaBuf.Testing;

/// <summary>
/// The exporter contract (design §3, <see cref="IDmaBufExporter"/>), checked the same way for every exporter: the
/// simulated heaps and the real-Linux exporters subclass it once each.
/// </summary>
public abstract class DmaBufExporterContract
{
    /// <summary>The registry the exporter under test lists its buffers in.</summary>
    protected abstract BufferRegistry ContractRegistry { get; }

    /// <summary>A device the exporter can map buffers for.</summary>
    protected abstract IDmaDevice ContractDevice { get; }

    /// <summary>Allocates a buffer from the exporter under test (skips the test when the machine lacks it).</summary>
    protected abstract DmaBufHandle ContractAllocate(long size, string? name = null);

    [Fact]
    public void Contract_Allocate_SizeNameExporterAndListing()
    {
        using DmaBufHandle handle = ContractAllocate(10_000, "contract");

        Assert.True(handle.Buffer.Size >= 10_000);
        Assert.Equal("contract", handle.Buffer.Name);
        Assert.False(string.IsNullOrEmpty(handle.Buffer.ExporterName));
        Assert.Same(handle.Buffer.Exporter.Name, handle.Buffer.ExporterName);
        Assert.True(ContractRegistry.Contains(handle.BufferId));
        Assert.Equal(DmaBufState.Live, handle.Buffer.State);
    }

    [Fact]
    public void Contract_Allocate_InvalidNameAfterExport_LeavesNothingBehind()
    {
        int before = ContractRegistry.Count;

        Assert.Throws<ArgumentException>(() => ContractAllocate(4096, new string('n', DmaBuffer.MaxNameLength + 1)));

        Assert.Equal(before, ContractRegistry.Count);
    }

    [Fact]
    public void Contract_TwoBuffers_HaveDistinctIds()
    {
        using DmaBufHandle a = ContractAllocate(4096);
        using DmaBufHandle b = ContractAllocate(4096);

        Assert.NotEqual(a.BufferId, b.BufferId);
    }

    [Fact]
    public void Contract_AttachMapUnmap_TableCoversTheBuffer()
    {
        using DmaBufHandle handle = ContractAllocate(64 * 1024);
        using DmaBufAttachment attachment = handle.Attach(ContractDevice);

        ScatterTable table = attachment.Map(DmaDirection.Bidirectional);

        Assert.True(table.TotalLength >= (ulong)handle.Buffer.Size);
        Assert.Equal(1, attachment.LiveMappingCount);
        attachment.Unmap(table);
        Assert.Equal(0, attachment.LiveMappingCount);
    }

    [Fact]
    public void Contract_Vmap_WritesAreReadBack()
    {
        using DmaBufHandle handle = ContractAllocate(3 * 4096);
        byte[] written = new byte[5000];
        new Random(7).NextBytes(written);

        using (IDmaBufCpuView view = handle.Vmap())
        {
            handle.BeginCpuAccess(CpuAccess.Write);
            view.Write(1000, written);
            handle.EndCpuAccess(CpuAccess.Write);
        }

        byte[] read = new byte[written.Length];
        using (IDmaBufCpuView view = handle.Vmap())
        {
            handle.BeginCpuAccess(CpuAccess.Read);
            view.Read(1000, read);
            handle.EndCpuAccess(CpuAccess.Read);
            Assert.Throws<ArgumentOutOfRangeException>(() => view.Read(view.Length - 10, new byte[20]));
        }

        Assert.Equal(written, read);
    }

    [Fact]
    public void Contract_CpuAccess_UnbalancedEnd_Throws()
    {
        using DmaBufHandle handle = ContractAllocate(4096);

        Assert.Throws<InvalidOperationException>(() => handle.EndCpuAccess(CpuAccess.Read));
        Assert.Throws<ArgumentException>(() => handle.BeginCpuAccess((CpuAccess)8));
    }

    [Fact]
    public void Contract_LastReference_ReleasesOnce_AttachmentKeepsItUntilDetach()
    {
        DmaBufHandle handle = ContractAllocate(4096);
        DmaBuffer buffer = handle.Buffer;
        DmaBufAttachment attachment = handle.Attach(ContractDevice);

        handle.Dispose();
        Assert.Equal(DmaBufState.Live, buffer.State);
        Assert.True(ContractRegistry.Contains(buffer.Id));

        attachment.Dispose();
        Assert.Equal(DmaBufState.Released, buffer.State);
        Assert.False(ContractRegistry.Contains(buffer.Id));
        Assert.Throws<ObjectDisposedException>(() => handle.Duplicate());
    }
}

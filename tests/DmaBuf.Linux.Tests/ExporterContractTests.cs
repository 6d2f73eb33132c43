using DmaBuf.Testing;

namespace DmaBuf.Linux.Tests;

/// <summary>
/// What every Linux exporter must do, whatever backs its buffers. Subclassed once per exporter; the subclasses for
/// exporters whose device node is absent skip, with the probe's reason.
/// </summary>
public abstract class ExporterContractTests : DmaBufExporterContract, IDisposable
{
    private readonly BufferRegistry _contractRegistry = new();
    private readonly CpuDevice _contractDevice = new("cpu");
    private LinuxExporter? _contractExporter;

    protected override BufferRegistry ContractRegistry => _contractRegistry;

    protected override IDmaDevice ContractDevice => _contractDevice;

    protected override DmaBufHandle ContractAllocate(long size, string? name = null) =>
        (_contractExporter ??= Create(registry: _contractRegistry)).Allocate(size, name);

    private const long Size = 3 * 4096 + 100; // not a whole number of pages

    private readonly List<LinuxExporter> _exporters = [];

    /// <summary>Makes the exporter under test, or skips the test when the machine lacks it.</summary>
    private protected abstract LinuxExporter CreateExporter(MmapCache cache, BufferRegistry registry);

    private protected abstract LinuxBufferKind ExpectedKind { get; }

    [Fact]
    public void Allocate_ReturnsALiveListedBufferOfTheRequestedSize()
    {
        var registry = new BufferRegistry();
        LinuxExporter exporter = Create(registry: registry);

        using DmaBufHandle handle = exporter.Allocate(Size, "contract");

        DmaBuffer buffer = handle.Buffer;
        Assert.Equal(Size, buffer.Size);
        Assert.Equal(exporter.Name, buffer.ExporterName);
        Assert.Equal("contract", buffer.Name);
        Assert.True(registry.Contains(buffer.Id));
        LinuxBuffer linux = buffer.GetLinuxBuffer();
        Assert.Equal(ExpectedKind, linux.Kind);
        Assert.True(linux.FileSize >= Size);
        Assert.Equal(linux.Identity, FileIdentity.Of(linux.Fd));
    }

    [Fact]
    public void Allocate_BadArguments_ThrowAndLeakNothing()
    {
        LinuxExporter exporter = Create();

        Leaks.AssertNone(() =>
        {
            Assert.Throws<ArgumentOutOfRangeException>(() => exporter.Allocate(0));
            Assert.Throws<ArgumentOutOfRangeException>(() => exporter.Allocate(-1));
            Assert.Throws<ArgumentException>(() => exporter.Allocate(4096, new string('x', DmaBuffer.MaxNameLength + 1)));
        });
    }

    [Fact]
    public void Allocate_TwoBuffers_HaveDistinctIdentities()
    {
        LinuxExporter exporter = Create();
        using DmaBufHandle a = exporter.Allocate(Size);
        using DmaBufHandle b = exporter.Allocate(Size);

        Assert.NotEqual(a.Buffer.GetLinuxBuffer().Identity, b.Buffer.GetLinuxBuffer().Identity);
        Assert.NotEqual(a.BufferId, b.BufferId);
    }

    [Fact]
    public void MapCpu_WritesAreSeenThroughVmap()
    {
        LinuxExporter exporter = Create();
        using DmaBufHandle handle = exporter.Allocate(Size);
        byte[] expected = new byte[Size];
        Random.Shared.NextBytes(expected);

        using (CpuMapping map = handle.MapCpu())
        {
            handle.BeginCpuAccess(CpuAccess.Write);
            expected.CopyTo(map.Span);
            handle.EndCpuAccess(CpuAccess.Write);
        }

        byte[] actual = new byte[Size];
        using (IDmaBufCpuView view = handle.Vmap())
        {
            handle.BeginCpuAccess(CpuAccess.Read);
            view.Read(0, actual);
            handle.EndCpuAccess(CpuAccess.Read);
        }

        Assert.Equal(expected, actual);
        Assert.Equal(0, handle.OpenCpuAccesses);
    }

    [Fact]
    public void MapCpu_Twice_UsesOneMmap()
    {
        var cache = new MmapCache();
        LinuxExporter exporter = Create(cache);
        using DmaBufHandle handle = exporter.Allocate(Size);

        using CpuMapping first = handle.MapCpu();
        using CpuMapping second = handle.MapCpu();
        using IDmaBufCpuView third = handle.Vmap();

        Assert.Equal(first.Address, second.Address);
        MmapCacheStatistics s = cache.Statistics;
        Assert.Equal(1, s.Misses);
        Assert.Equal(2, s.Hits);
        Assert.Equal(1, s.MapCalls);
        Assert.Equal(1, s.LiveMappings);
    }

    [Fact]
    public void Map_ForACpuDevice_ReturnsTheMappedRegionAndReachesTheBytes()
    {
        LinuxExporter exporter = Create();
        using DmaBufHandle handle = exporter.Allocate(Size);
        var device = new CpuDevice("sw-decoder");
        using CpuMapping map = handle.MapCpu();
        map.Span.Fill(0x5a);

        using (DmaBufAttachment attachment = handle.Attach(device))
        {
            ScatterTable table = attachment.Map(DmaDirection.Bidirectional);

            Assert.Equal((ulong)Size, table.TotalLength);
            Assert.Equal((ulong)map.Address, table.Segments[0].Address);
            byte[] read = new byte[64];
            device.Read(table, Size - 64, read);
            Assert.All(read, b => Assert.Equal(0x5a, b));
            device.Write(table, 0, [1, 2, 3]);
            Assert.Equal([1, 2, 3], map.Span[..3].ToArray());

            attachment.Unmap(table);
            Assert.Throws<ArgumentException>(() => device.Read(table, 0, read));
        }
    }

    [Fact]
    public void Attach_DeviceBehindAnotherAddressSpace_IsRefused()
    {
        LinuxExporter exporter = Create();
        using DmaBufHandle handle = exporter.Allocate(Size);

        NotSupportedException e = Assert.Throws<NotSupportedException>(() => handle.Attach(new ForeignDevice()));

        Assert.Contains("cpu", e.Message, StringComparison.Ordinal);
        Assert.Equal(1, handle.Buffer.ReferenceCount);
    }

    [Fact]
    public void Map_KeepsItsMappingWhenTheCacheEvictsIt()
    {
        var cache = new MmapCache(budgetBytes: 0); // keeps nothing: every mapping is evicted at once
        LinuxExporter exporter = Create(cache);
        using DmaBufHandle handle = exporter.Allocate(Size);
        var device = new CpuDevice("reader");
        using DmaBufAttachment attachment = handle.Attach(device);

        ScatterTable table = attachment.Map(DmaDirection.ToDevice);

        Assert.Equal(1, cache.Statistics.Evictions);
        Assert.Equal(1, cache.Statistics.LiveMappings);
        device.Write(table, 0, [9]);
        byte[] one = new byte[1];
        device.Read(table, 0, one);
        Assert.Equal(9, one[0]);

        attachment.Unmap(table);
        Assert.Equal(0, cache.Statistics.LiveMappings);
    }

    [Fact]
    public void Release_UnmapsAndClosesTheDescriptor()
    {
        var cache = new MmapCache();
        var registry = new BufferRegistry();
        LinuxExporter exporter = Create(cache, registry);

        Leaks.AssertNone(() =>
        {
            DmaBufHandle handle = exporter.Allocate(Size);
            using (CpuMapping map = handle.MapCpu())
            {
                map.Span[0] = 1;
            }

            Assert.Equal(1, cache.Statistics.CachedMappings);
            handle.Dispose();

            Assert.Equal(0, cache.Statistics.LiveMappings);
            Assert.Equal(0, registry.Count);
        });
    }

    [Fact]
    public void Release_WaitsForTheLastMappingLease()
    {
        var cache = new MmapCache();
        LinuxExporter exporter = Create(cache);
        DmaBufHandle handle = exporter.Allocate(Size);
        DmaBuffer buffer = handle.Buffer;
        CpuMapping map = handle.MapCpu();

        handle.Dispose();
        Assert.Equal(DmaBufState.Live, buffer.State);
        map.Span[0] = 7; // still mapped and usable

        map.Dispose();
        Assert.Equal(DmaBufState.Released, buffer.State);
        Assert.Equal(0, cache.Statistics.LiveMappings);
    }

    [Fact]
    public void Import_OfADuplicateDescriptor_IsValidAndDedupes()
    {
        var cache = new MmapCache();
        LinuxExporter exporter = Create(cache);
        using DmaBufHandle handle = exporter.Allocate(Size);
        var imports = new ImportCache(cache);
        SafeFdHandle fd = handle.Buffer.GetLinuxBuffer().Fd;

        using DmaBufHandle first = imports.Import(Interop.Libc.Duplicate(fd), Size);
        using DmaBufHandle second = imports.Import(Interop.Libc.Duplicate(fd), Size);

        Assert.Same(first.Buffer, second.Buffer);
        Assert.Equal(handle.Buffer.GetLinuxBuffer().Identity, first.Buffer.GetLinuxBuffer().Identity);
        Assert.Equal(ExpectedKind, first.Buffer.GetLinuxBuffer().Kind);
    }

    [Fact]
    public void SendOverAChannel_TheReceiverSeesTheSameBytesInPlace()
    {
        var imports = new ImportCache(new MmapCache());
        LinuxExporter exporter = Create();
        using DmaBufHandle handle = exporter.Allocate(Size);
        (BufferChannel sender, BufferChannel receiver) = BufferChannel.CreatePair(second: new BufferChannelOptions { ImportCache = imports });
        using (sender)
        using (receiver)
        {
            sender.SendBuffer(handle);
            using var received = (ReceivedBuffer)receiver.Receive()!;
            using CpuMapping theirs = received.Handle.MapCpu();
            using CpuMapping ours = handle.MapCpu();

            ours.Span[100] = 0xab;
            Assert.Equal(0xab, theirs.Span[100]);
            Assert.Equal(handle.Buffer.GetLinuxBuffer().Identity, received.Handle.Buffer.GetLinuxBuffer().Identity);
        }
    }

    public void Dispose()
    {
        foreach (LinuxExporter e in _exporters)
        {
            (e as IDisposable)?.Dispose(); // the heap and udmabuf exporters hold their device node open
        }

        GC.SuppressFinalize(this);
    }

    /// <summary>Probes the machine; skips the test, with the probe's reason, when it lacks the exporter's kernel feature.</summary>
    private protected static LinuxFeatures ProbeOrSkip(Action<LinuxFeatures> require)
    {
        LinuxFeatures features = LinuxFeatures.Probe();
        try
        {
            require(features);
        }
        catch (FeatureNotAvailableException e)
        {
            // The kernel lacks the feature: the only reason these tests skip. Of the two kernels the QEMU harness boots,
            // Debian 12's 6.1 is built without CONFIG_DMABUF_HEAPS and CONFIG_UDMABUF; its backports 6.12 has both.
            Assert.Skip(KernelRequirement.SkipReason(e.Message));
        }

        return features;
    }

    private LinuxExporter Create(MmapCache? cache = null, BufferRegistry? registry = null)
    {
        LinuxExporter exporter = CreateExporter(cache ?? new MmapCache(), registry ?? new BufferRegistry());
        _exporters.Add(exporter);
        return exporter;
    }
}

public sealed class MemfdExporterContractTests : ExporterContractTests
{
    private protected override LinuxBufferKind ExpectedKind => LinuxBufferKind.Memfd;

    private protected override LinuxExporter CreateExporter(MmapCache cache, BufferRegistry registry) => new MemfdExporter(cache, registry);
}

[Trait(KernelRequirement.Trait, "dma-heap")]
public sealed class DmaHeapExporterContractTests : ExporterContractTests
{
    private protected override LinuxBufferKind ExpectedKind => LinuxBufferKind.DmaBuf;

    private protected override LinuxExporter CreateExporter(MmapCache cache, BufferRegistry registry)
    {
        LinuxFeatures features = ProbeOrSkip(f => f.RequireDmaHeap("system"));

        return new DmaHeapExporter("system", cache, registry, features);
    }
}

[Trait(KernelRequirement.Trait, "udmabuf")]
public sealed class UdmabufExporterContractTests : ExporterContractTests
{
    private protected override LinuxBufferKind ExpectedKind => LinuxBufferKind.DmaBuf;

    private protected override LinuxExporter CreateExporter(MmapCache cache, BufferRegistry registry)
    {
        LinuxFeatures features = ProbeOrSkip(f => f.RequireUdmabuf());

        return new UdmabufExporter(cache, registry, features);
    }
}

[Trait(KernelRequirement.Trait, "vgem")]
public sealed class DrmPrimeExporterContractTests : ExporterContractTests
{
    private protected override LinuxBufferKind ExpectedKind => LinuxBufferKind.DmaBuf;

    private protected override LinuxExporter CreateExporter(MmapCache cache, BufferRegistry registry)
    {
        return KernelRequirement.Vgem(cache, registry);
    }
}

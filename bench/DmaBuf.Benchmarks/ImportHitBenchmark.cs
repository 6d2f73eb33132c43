using BenchmarkDotNet.Attributes;
using DmaBuf.Simulation;

namespace DmaBuf.Benchmarks;

/// <summary>
/// The hit path of the import cache: what an importer pays per frame once a buffer of its pool is imported and mapped.
/// One use is <c>ImportContext.Import(handle)</c> of an already-imported buffer, <c>Map(direction)</c> answered from the
/// cache, and <c>Dispose()</c> to end the use — for both mapping modes — and, for the buffer-metadata strategy, one
/// <c>GetOrAddMapping</c> that finds its entry. Target: at most 100 ns and 0 bytes allocated per use. The component
/// cases (import + end of use alone, cached map alone, the bare metadata lookup) show where the time of a whole use goes.
/// The buffer is a 1080p NV12 frame from the simulated system heap, mapped for the display.
/// </summary>
[MemoryDiagnoser]
public class ImportHitBenchmark
{
    private const int FrameBytes = 1920 * 1080 * 3 / 2;

    private static readonly MetadataKey<CachedMapping> s_mappingKey = new("bench-mapping");
    private static readonly MetadataKey<string> s_plainKey = new("bench-plain");

    private Soc _soc = null!;
    private DmaBufHandle _handle = null!;
    private ImportContext _perAttachment = null!;
    private ImportContext _perAddressSpace = null!;
    private SharedMappingCache _sharedCache = null!;
    private ImportedBuffer _held = null!;
    private ImportedBuffer _heldShared = null!;
    private MetadataOwner _owner = null!;
    private SimDevice _device = null!;

    [GlobalSetup]
    public void Setup()
    {
        _soc = new Soc(new SocOptions { MemoryBytes = 64L << 20 });
        _device = _soc.Display;
        _handle = _soc.SystemHeap.Allocate(FrameBytes, "frame");
        _perAttachment = new ImportContext(_device, ImportMappingMode.PerAttachment);
        _sharedCache = new SharedMappingCache(_device.AddressSpace);
        _perAddressSpace = new ImportContext(_device, _sharedCache);
        _owner = new MetadataOwner("bench driver");

        // The misses: first import and first map of each, so every measured call is a hit.
        using (ImportedBuffer i = _perAttachment.Import(_handle))
        {
            i.Map(DmaDirection.ToDevice);
        }

        using (ImportedBuffer i = _perAddressSpace.Import(_handle))
        {
            i.Map(DmaDirection.ToDevice);
        }

        _handle.Buffer.Metadata.GetOrAddMapping(s_mappingKey, _owner, _device, DmaDirection.ToDevice, out _);
        _handle.Buffer.Metadata.GetOrAdd(s_plainKey, _owner, static _ => "value");

        // Uses held open for the map-only cases.
        _held = _perAttachment.Import(_handle);
        _heldShared = _perAddressSpace.Import(_handle);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _held.Dispose();
        _heldShared.Dispose();
        _perAttachment.Dispose();
        _perAddressSpace.Dispose();
        _sharedCache.Dispose();
        _owner.Dispose();
        _handle.Dispose();
    }

    /// <summary>Import (hit) + cached map + end of use, the exporter caching the mapping per attachment.</summary>
    [Benchmark(Baseline = true)]
    public ScatterTable ImportMapDispose_PerAttachment()
    {
        ImportedBuffer imported = _perAttachment.Import(_handle);
        ScatterTable table = imported.Map(DmaDirection.ToDevice);
        imported.Dispose();
        return table;
    }

    /// <summary>Import (hit) + cached map + end of use, one mapping per (buffer, IOMMU domain).</summary>
    [Benchmark]
    public ScatterTable ImportMapDispose_PerAddressSpace()
    {
        ImportedBuffer imported = _perAddressSpace.Import(_handle);
        ScatterTable table = imported.Map(DmaDirection.ToDevice);
        imported.Dispose();
        return table;
    }

    /// <summary>The buffer-metadata strategy's hit: the importer's mapping found under (key, owner).</summary>
    [Benchmark]
    public ScatterTable MetadataGetOrAddMapping()
    {
        CachedMapping m = _handle.Buffer.Metadata.GetOrAddMapping(s_mappingKey, _owner, _device, DmaDirection.ToDevice, out _);
        return m.Table;
    }

    /// <summary>Component: import (hit) and end of use, no map.</summary>
    [Benchmark]
    public ImportedBuffer ImportDisposeOnly()
    {
        ImportedBuffer imported = _perAttachment.Import(_handle);
        imported.Dispose();
        return imported;
    }

    /// <summary>Component: the cached map of an import already in use, per attachment.</summary>
    [Benchmark]
    public ScatterTable MapOnly_PerAttachment() => _held.Map(DmaDirection.ToDevice);

    /// <summary>Component: the cached map of an import already in use, per address space.</summary>
    [Benchmark]
    public ScatterTable MapOnly_PerAddressSpace() => _heldShared.Map(DmaDirection.ToDevice);

    /// <summary>Component: one metadata lookup (buffer lock, scan of the entries) with nothing around it.</summary>
    [Benchmark]
    public string? MetadataTryGet()
    {
        _handle.Buffer.Metadata.TryGet(s_plainKey, _owner, out string? value);
        return value;
    }
}

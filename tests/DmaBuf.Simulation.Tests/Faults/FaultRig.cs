using DmaBuf.Testing;

namespace DmaBuf.Simulation.Tests;

// A SoC whose three heaps export through FailingExporter decorators and whose memory and IOMMU domains ask one
// FaultInjector before every allocation, IOVA allocation and page-table write. AssertNothingLeaked is the check every
// fault test ends with: no page, IOVA range, page-table entry, mapping, registry entry or live buffer left behind, and
// every buffer released exactly once through its exporter.
internal sealed class FaultRig
{
    public FaultRig(IommuMode mode = IommuMode.Strict)
    {
        Soc = new Soc(new SocOptions { MemoryBytes = 64L << 20, ContiguousBytes = 16L << 20, Seed = 11, Mode = mode });
        System = Front(Soc.SystemHeap);
        Contiguous = Front(Soc.ContiguousHeap);
        DeviceLocal = Front(Soc.DeviceLocalHeap);
        Soc.FaultInjection = Hardware.ShouldFail;
    }

    public Soc Soc { get; }

    public FailingExporter System { get; }

    public FailingExporter Contiguous { get; }

    public FailingExporter DeviceLocal { get; }

    public FaultInjector<SimFaultSite> Hardware { get; } = new();

    public IEnumerable<(SimHeap Heap, FailingExporter Exporter)> Heaps =>
        [(Soc.SystemHeap, System), (Soc.ContiguousHeap, Contiguous), (Soc.DeviceLocalHeap, DeviceLocal)];

    /// <summary>The decorator in front of <paramref name="heap"/>.</summary>
    public FailingExporter ExporterOf(SimHeap heap) => Heaps.Single(h => ReferenceEquals(h.Heap, heap)).Exporter;

    /// <summary>Makes the next call of <paramref name="operation"/> fail on every heap's exporter.</summary>
    public void FailNext(ExporterOperation operation)
    {
        foreach ((_, FailingExporter e) in Heaps)
        {
            e.Faults.FailNextCall(operation);
        }
    }

    public void AssertNothingLeaked()
    {
        Soc.FlushAll();
        var problems = new List<string>();
        void Check(bool ok, string what)
        {
            if (!ok)
            {
                problems.Add(what);
            }
        }

        PhysicalMemory m = Soc.Memory;
        Check(m.AllocatedPages == 0, $"{m.AllocatedPages} pages still allocated");
        Check(m.FreePendingPages == 0, $"{m.FreePendingPages} pages still held back for a device");
        Check(m.FreePages == m.TotalPages, $"{m.TotalPages - m.FreePages} pages not back in the allocators");
        Check(Soc.Registry.Count == 0, $"{Soc.Registry.Count} buffers still listed");
        foreach (IommuDomain d in Soc.Domains)
        {
            Check(d.LiveMappings == 0, $"{d.Name}: {d.LiveMappings} live mappings");
            Check(d.IovaRangesHeld == 0, $"{d.Name}: {d.IovaRangesHeld} IOVA ranges held");
            Check(d.PageTableEntries == 0, $"{d.Name}: {d.PageTableEntries} page-table entries");
        }

        SimStats s = Soc.Stats;
        Check(s.IovaAllocs == s.IovaFrees, $"IOVA allocated {s.IovaAllocs} times, freed {s.IovaFrees}");
        Check(s.MapCalls == s.UnmapCalls, $"{s.MapCalls} maps, {s.UnmapCalls} unmaps");
        Check(s.PagesMapped == s.PagesUnmapped, $"{s.PagesMapped} entries written, {s.PagesUnmapped} cleared");
        Check(s.FreedPageAccesses == 0, $"{s.FreedPageAccesses} freed-page accesses");
        Check(s.DmaFaults == 0, $"{s.DmaFaults} DMA faults");
        foreach ((SimHeap heap, FailingExporter exporter) in Heaps)
        {
            Check(heap.LiveBuffers == 0, $"{heap.Name}: {heap.LiveBuffers} buffers never released");
            Check(exporter.Faults.Calls(ExporterOperation.Release) == heap.Releases,
                $"{heap.Name}: exporter Release called {exporter.Faults.Calls(ExporterOperation.Release)} times for {heap.Releases} releases");
            Balance(exporter, ExporterOperation.Attach, ExporterOperation.Detach);
            Balance(exporter, ExporterOperation.Map, ExporterOperation.Unmap);
            Balance(exporter, ExporterOperation.Pin, ExporterOperation.Unpin);
            Check(exporter.Succeeded(ExporterOperation.BeginCpuAccess) >= exporter.Faults.Calls(ExporterOperation.EndCpuAccess),
                $"{heap.Name}: more CPU access ends than begins");
        }

        Assert.True(problems.Count == 0, "Leaked: " + string.Join("; ", problems));

        // Every operation that succeeded has exactly one undo (an undo that broke the contract by throwing still counts).
        void Balance(FailingExporter e, ExporterOperation op, ExporterOperation undo) =>
            Check(e.Succeeded(op) == e.Faults.Calls(undo), $"{e.Name}: {e.Succeeded(op)} successful {op}, {e.Faults.Calls(undo)} {undo}");
    }

    private static FailingExporter Front(SimHeap heap)
    {
        var exporter = new FailingExporter(heap);
        heap.ExportAs = exporter;
        return exporter;
    }
}

using DmaBuf.Testing;

namespace DmaBuf.Simulation.Tests;

public sealed class FaultInjectorTests
{
    [Fact]
    public void FailOnCall_OnlyThatCallFails_EveryCallCounted()
    {
        var faults = new FaultInjector<string>().FailOnCall("map", 3);

        bool[] seen = [.. Enumerable.Range(0, 5).Select(_ => faults.ShouldFail("map"))];

        Assert.Equal([false, false, true, false, false], seen);
        Assert.Equal(5, faults.Calls("map"));
        Assert.Equal(1, faults.Failures("map"));
        Assert.False(faults.ShouldFail("attach"));
    }

    [Fact]
    public void FailFromCall_FailsUntilHealed()
    {
        var faults = new FaultInjector<string>().FailFromCall("alloc", 2);

        Assert.False(faults.ShouldFail("alloc"));
        Assert.True(faults.ShouldFail("alloc"));
        Assert.True(faults.ShouldFail("alloc"));
        faults.Heal("alloc");
        Assert.False(faults.ShouldFail("alloc"));
        Assert.Equal(2, faults.TotalFailures);
    }

    [Fact]
    public void FailNextCall_CountsFromNow()
    {
        var faults = new FaultInjector<string>();
        faults.ShouldFail("pin");
        faults.ShouldFail("pin");

        faults.FailNextCall("pin");

        Assert.True(faults.ShouldFail("pin"));
        Assert.False(faults.ShouldFail("pin"));
    }

    [Fact]
    public void FailingExporter_AfterTiming_DoesTheWorkThenThrows()
    {
        var soc = new Soc(new SocOptions { MemoryBytes = 16L << 20, ContiguousBytes = 4L << 20 });
        var exporter = new FailingExporter(soc.SystemHeap);
        soc.SystemHeap.ExportAs = exporter;
        using DmaBufHandle handle = soc.SystemHeap.Allocate(4096);
        using DmaBufAttachment a = handle.Attach(soc.Gpu);
        ScatterTable table = a.Map(DmaDirection.ToDevice);
        exporter.Faults.FailNextCall(ExporterOperation.Unmap);

        InjectedFaultException e = Assert.Throws<InjectedFaultException>(() => a.Unmap(table));

        Assert.Contains("Unmap, call 1", e.Message, StringComparison.Ordinal);
        Assert.Equal(0, ((IommuDomain)soc.Gpu.SimAddressSpace).LiveMappings); // the unmap itself happened
        Assert.Equal(1, exporter.Succeeded(ExporterOperation.Map));
        Assert.Equal(0, exporter.Succeeded(ExporterOperation.Unmap));
    }
}

/// <summary>The exporter contract through a <see cref="FailingExporter"/> that injects nothing: the decorator is transparent.</summary>
public sealed class FailingExporterContractTests : HeapContractTests
{
    public FailingExporterContractTests() => Soc.SystemHeap.ExportAs = new FailingExporter(Soc.SystemHeap);

    protected override SimHeap Heap => Soc.SystemHeap;
}

using DmaBuf.Testing;

namespace DmaBuf.Simulation.Tests;

/// <summary>
/// A workload that touches every operation that can fail — three heaps, CPU access, plain, cached, pinned and
/// metadata mappings, an import cache, a dynamic importer, compaction and eviction — run once cleanly to count the
/// calls of each fault point, then once per call with exactly that call failing. Every run must surface its failure
/// and, once the workload's own using-blocks have unwound, leave nothing behind.
/// </summary>
public sealed class FaultSweepTests
{
    private const int FrameBytes = 256 * 1024;
    private const int VramBytes = 128 * 1024;
    private static readonly MetadataKey<CachedMapping> s_gpuMapping = new("gpu mapping");

    public static TheoryData<string, ExporterOperation> ExporterPoints()
    {
        var data = new TheoryData<string, ExporterOperation>();
        foreach (string heap in new[] { "system", "contiguous", "device-local" })
        {
            foreach (ExporterOperation op in new[]
            {
                ExporterOperation.Attach, ExporterOperation.Map, ExporterOperation.Pin,
                ExporterOperation.BeginCpuAccess, ExporterOperation.EndCpuAccess, ExporterOperation.Vmap,
            })
            {
                data.Add(heap, op);
            }
        }

        return data;
    }

    [Fact]
    public void Workload_WithoutFaults_RunsAndLeavesNothing()
    {
        var rig = new FaultRig();

        Workload(rig);

        rig.AssertNothingLeaked();
        Assert.True(rig.Soc.DeviceLocalHeap.Releases == 1 && rig.Soc.SystemHeap.Releases == 1 && rig.Soc.ContiguousHeap.Releases == 1);
    }

    [Theory]
    [MemberData(nameof(ExporterPoints))]
    public void Workload_EachCallOfAnExporterOperationFails_NothingLeaks(string heap, ExporterOperation operation)
    {
        var clean = new FaultRig();
        Workload(clean);
        int calls = clean.ExporterOf(HeapOf(clean, heap)).Faults.Calls(operation);
        Assert.True(calls > 0, $"the workload never calls {operation} on the {heap} heap");

        Sweep(calls, nth =>
        {
            var rig = new FaultRig();
            rig.ExporterOf(HeapOf(rig, heap)).Faults.FailOnCall(operation, nth);
            return rig;
        });
    }

    // once: only that call fails. A heap that falls back to a smaller chunk order absorbs a single failed page
    // allocation (as Linux's system heap does), so that run may succeed; it must still leave nothing behind.
    // Not once: every call from that one on fails, as when memory is really exhausted; that always surfaces.
    [Theory]
    [InlineData(SimFaultSite.PageAllocation, true)]
    [InlineData(SimFaultSite.PageAllocation, false)]
    [InlineData(SimFaultSite.ContiguousAllocation, true)]
    [InlineData(SimFaultSite.IovaAllocation, true)]
    [InlineData(SimFaultSite.PageTableWrite, true)]
    public void Workload_EachHardwareStepFails_NothingLeaks(SimFaultSite site, bool once)
    {
        var clean = new FaultRig();
        Workload(clean);
        int calls = clean.Hardware.Calls(site);
        Assert.True(calls > 0, $"the workload never reaches {site}");

        Sweep(calls, nth =>
        {
            var rig = new FaultRig();
            if (once)
            {
                rig.Hardware.FailOnCall(site, nth);
            }
            else
            {
                rig.Hardware.FailFromCall(site, nth);
            }

            return rig;
        }, mayAbsorb: once && site == SimFaultSite.PageAllocation);
    }

    private static void Sweep(int calls, Func<int, FaultRig> rigFailingAt, bool mayAbsorb = false)
    {
        var failures = new List<string>();
        for (int nth = 1; nth <= calls; nth++)
        {
            FaultRig rig = rigFailingAt(nth);
            Exception? thrown = null;
            try
            {
                Workload(rig);
            }
            catch (Exception e)
            {
                thrown = e;
            }

            try
            {
                Assert.True(thrown is not null || mayAbsorb, "the injected failure did not reach the caller");
                Assert.True(
                    thrown is null or InjectedFaultException or DmaMappingException or OutOfMemoryException or NotSupportedException,
                    $"the failure surfaced as {thrown?.GetType().Name}: {thrown?.Message}");
                rig.AssertNothingLeaked();
            }
            catch (Exception e)
            {
                failures.Add($"call {nth}: {e.Message}" + (thrown is null ? "" : $" (workload threw {thrown.GetType().Name}: {thrown.Message})"));
            }
        }

        Assert.True(failures.Count == 0, $"{failures.Count} of {calls} runs went wrong:\n" + string.Join("\n", failures));
    }

    private static SimHeap HeapOf(FaultRig rig, string name) => name switch
    {
        "system" => rig.Soc.SystemHeap,
        "contiguous" => rig.Soc.ContiguousHeap,
        _ => rig.Soc.DeviceLocalHeap,
    };

    private static void Workload(FaultRig rig)
    {
        Soc soc = rig.Soc;
        byte[] data = [.. Enumerable.Range(0, FrameBytes).Select(i => (byte)((i * 29) + 5))];
        using DmaBufHandle frame = soc.SystemHeap.Allocate(FrameBytes, "frame");
        using DmaBufHandle vram = soc.DeviceLocalHeap.Allocate(VramBytes, "vram");
        using DmaBufHandle scanout = soc.ContiguousHeap.Allocate(64 * 1024, "scanout");

        // Every heap's buffer is pinned once by an attachment, and read once by the CPU.
        foreach (DmaBufHandle h in new[] { frame, vram, scanout })
        {
            using (DmaBufAttachment gpu = h.Attach(soc.Gpu))
            {
                gpu.Pin();
                gpu.Unpin();
            }

            using IDmaBufCpuView view = h.Vmap();
            h.BeginCpuAccess(CpuAccess.Read);
            try
            {
                view.Read(0, new byte[64]);
            }
            finally
            {
                h.EndCpuAccess(CpuAccess.Read);
            }
        }

        // The CPU fills the frame; the decoder fills the device-local buffer.
        using (IDmaBufCpuView view = frame.Vmap())
        {
            frame.BeginCpuAccess(CpuAccess.Write);
            try
            {
                view.Write(0, data);
            }
            finally
            {
                frame.EndCpuAccess(CpuAccess.Write);
            }
        }

        using (DmaBufAttachment vpu = vram.Attach(soc.Vpu))
        {
            ScatterTable m = vpu.Map(DmaDirection.FromDevice);
            try
            {
                Assert.True(soc.Vpu.DmaWrite(m, 0, data.AsSpan(0, VramBytes)));
            }
            finally
            {
                vpu.Unmap(m);
            }
        }

        // Scan-out pins its buffer and keeps one cached mapping; the CPU reads it.
        using (DmaBufAttachment display = scanout.Attach(soc.Display))
        {
            display.Pin();
            try
            {
                display.MapCached(DmaDirection.ToDevice, out _);
                using IDmaBufCpuView view = scanout.Vmap();
                scanout.BeginCpuAccess(CpuAccess.Read);
                try
                {
                    view.Read(0, new byte[4096]);
                }
                finally
                {
                    scanout.EndCpuAccess(CpuAccess.Read);
                }
            }
            finally
            {
                display.Unpin();
            }
        }

        // A driver keeps a mapping as metadata; the encoder imports the frame through its import cache.
        using var driver = new MetadataOwner("gpu driver");
        vram.Buffer.Metadata.GetOrAddMapping(s_gpuMapping, driver, soc.Gpu, DmaDirection.Bidirectional, out _);
        using var imports = new ImportContext(soc.Encoder);
        using (ImportedBuffer imported = imports.Import(frame))
        {
            ScatterTable t = imported.Map(DmaDirection.ToDevice);
            byte[] read = new byte[FrameBytes];
            Assert.True(soc.Encoder.DmaRead(t, 0, read));
            Assert.Equal(data, read);
        }

        // A dynamic importer with a cached mapping sees the buffer compacted, then evicted, and rebuilds its mapping.
        using (DmaBufAttachment isp = vram.Attach(soc.Isp, importer: new NullImporter()))
        {
            isp.MapCached(DmaDirection.Bidirectional, out _);
            soc.DeviceLocalHeap.Compact(vram);
            soc.DeviceLocalHeap.Evict(vram);
            ScatterTable again = isp.MapCached(DmaDirection.Bidirectional, out _);
            byte[] read = new byte[VramBytes];
            Assert.True(soc.Isp.DmaRead(again, 0, read));
            Assert.True(data.AsSpan(0, VramBytes).SequenceEqual(read), "the moved buffer lost its content");
        }
    }

    private sealed class NullImporter : IDmaBufImporter
    {
        public void MoveNotify(DmaBufAttachment attachment)
        {
        }
    }
}

using DmaBuf.Testing;

namespace DmaBuf.Simulation.Tests;

/// <summary>
/// Every exporter operation made to fail through a <see cref="FailingExporter"/> in front of a simulated heap: the
/// failure reaches the caller, and once everything is disposed nothing is left behind (rules 7 and 11).
/// </summary>
public sealed class ExporterFaultTests
{
    private const int Size = 64 * 1024;

    [Fact]
    public void Attach_Fails_NoAttachmentNoReference_BufferReleasedOnce()
    {
        var rig = new FaultRig();
        DmaBufHandle handle = rig.Soc.SystemHeap.Allocate(Size);
        rig.System.Faults.FailNextCall(ExporterOperation.Attach);

        NotSupportedException e = Assert.Throws<NotSupportedException>(() => handle.Attach(rig.Soc.Gpu));

        Assert.IsType<InjectedFaultException>(e.InnerException);
        Assert.Empty(handle.Buffer.Attachments);
        Assert.Equal(1, handle.Buffer.ReferenceCount);
        handle.Dispose();
        Assert.Equal(1, rig.System.Faults.Calls(ExporterOperation.Release));
        rig.AssertNothingLeaked();
    }

    [Fact]
    public void Map_Fails_NoMappingAnywhere()
    {
        var rig = new FaultRig();
        using (DmaBufHandle handle = rig.Soc.SystemHeap.Allocate(Size))
        using (DmaBufAttachment a = handle.Attach(rig.Soc.Gpu))
        {
            rig.System.Faults.FailNextCall(ExporterOperation.Map);

            Assert.Throws<DmaMappingException>(() => a.Map(DmaDirection.ToDevice));

            Assert.Equal(0, a.LiveMappingCount);
            Assert.Equal(0, ((IommuDomain)rig.Soc.Gpu.SimAddressSpace).LiveMappings);
            ScatterTable table = a.Map(DmaDirection.ToDevice); // the next one works
            Assert.True(rig.Soc.Gpu.DmaRead(table, 0, new byte[Size]));
        }

        rig.AssertNothingLeaked();
    }

    [Fact]
    public void MapCached_RemapForAnotherDirectionFails_OldMappingGoneNoNewOne()
    {
        var rig = new FaultRig();
        using (DmaBufHandle handle = rig.Soc.SystemHeap.Allocate(Size))
        using (DmaBufAttachment a = handle.Attach(rig.Soc.Gpu))
        {
            a.MapCached(DmaDirection.ToDevice, out _);
            rig.System.Faults.FailNextCall(ExporterOperation.Map);

            Assert.Throws<DmaMappingException>(() => a.MapCached(DmaDirection.FromDevice, out _));

            Assert.False(a.HasCachedMapping);
            Assert.Equal(0, ((IommuDomain)rig.Soc.Gpu.SimAddressSpace).LiveMappings);
        }

        rig.AssertNothingLeaked();
    }

    [Fact]
    public void Pin_Fails_BufferNotPinned_AndCanStillMove()
    {
        var rig = new FaultRig();
        using (DmaBufHandle handle = rig.Soc.DeviceLocalHeap.Allocate(Size))
        using (DmaBufAttachment a = handle.Attach(rig.Soc.Gpu, importer: new NullImporter()))
        {
            rig.DeviceLocal.Faults.FailNextCall(ExporterOperation.Pin);

            Assert.Throws<InjectedFaultException>(a.Pin);

            Assert.False(a.IsPinned);
            rig.Soc.DeviceLocalHeap.Compact(handle); // a pinned buffer would refuse
            Assert.Equal(0, rig.DeviceLocal.Faults.Calls(ExporterOperation.Unpin));
        }

        rig.AssertNothingLeaked();
    }

    [Theory]
    [InlineData(ExporterOperation.BeginCpuAccess)]
    [InlineData(ExporterOperation.EndCpuAccess)]
    public void CpuAccess_BracketFails_NoOpenBracketLeft(ExporterOperation operation)
    {
        var rig = new FaultRig();
        using (DmaBufHandle handle = rig.Soc.SystemHeap.Allocate(Size))
        {
            rig.System.Faults.FailNextCall(operation);
            if (operation == ExporterOperation.BeginCpuAccess)
            {
                Assert.Throws<InjectedFaultException>(() => handle.BeginCpuAccess(CpuAccess.Write));
                Assert.Throws<InvalidOperationException>(() => handle.EndCpuAccess(CpuAccess.Write)); // nothing was begun
            }
            else
            {
                handle.BeginCpuAccess(CpuAccess.Write);
                using (IDmaBufCpuView view = handle.Vmap())
                {
                    view.Write(0, [1, 2, 3]); // a dirty line the failed end never cleans
                }

                Assert.Throws<InjectedFaultException>(() => handle.EndCpuAccess(CpuAccess.Write));
            }

            Assert.Equal(0, handle.OpenCpuAccesses);
        }

        Assert.Equal(0, rig.Soc.CpuCache.LineCount); // the dirty line died with the buffer, not with the next owner
        rig.AssertNothingLeaked();
    }

    [Fact]
    public void Vmap_Fails_TheViewsReferenceIsDropped()
    {
        var rig = new FaultRig();
        DmaBufHandle handle = rig.Soc.ContiguousHeap.Allocate(Size);
        rig.Contiguous.Faults.FailNextCall(ExporterOperation.Vmap);

        Assert.Throws<NotSupportedException>(handle.Vmap);

        Assert.Equal(1, handle.Buffer.ReferenceCount);
        DmaBuffer buffer = handle.Buffer;
        handle.Dispose();
        Assert.Equal(DmaBufState.Released, buffer.State);
        rig.AssertNothingLeaked();
    }

    [Fact]
    public void Allocate_StepAfterExportFails_ExporterReleaseRunsOnce()
    {
        // Rule 7: after export succeeds the heap's failure path may only drop its reference.
        var rig = new FaultRig();

        Assert.Throws<ArgumentException>(() => rig.Soc.DeviceLocalHeap.Allocate(Size, new string('n', 64)));

        Assert.Equal(1, rig.DeviceLocal.Faults.Calls(ExporterOperation.Release));
        Assert.Equal(1, rig.Soc.DeviceLocalHeap.Releases);
        rig.AssertNothingLeaked();
    }

    [Fact]
    public void CachedMappingMetadata_MapFails_TheEntrysAttachmentIsDetached()
    {
        var rig = new FaultRig();
        var key = new MetadataKey<CachedMapping>("display mapping");
        using (var owner = new MetadataOwner("display driver"))
        using (DmaBufHandle handle = rig.Soc.SystemHeap.Allocate(Size))
        {
            rig.System.Faults.FailNextCall(ExporterOperation.Map);

            Assert.Throws<DmaMappingException>(() => handle.Buffer.Metadata.GetOrAddMapping(key, owner, rig.Soc.Display, DmaDirection.ToDevice, out _));

            Assert.Equal(0, handle.Buffer.Metadata.Count);
            Assert.Empty(handle.Buffer.Attachments);
            Assert.Equal(0, owner.EntryCount);
        }

        rig.AssertNothingLeaked();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Import_AttachOrMapFails_NothingCachedNothingAttached(bool perAddressSpace)
    {
        var rig = new FaultRig();
        using (DmaBufHandle handle = rig.Soc.SystemHeap.Allocate(Size))
        {
            // Per address space, the shared mapping belongs to the address space's cache, not to the context.
            using (SharedMappingCache? shared = perAddressSpace ? new SharedMappingCache(rig.Soc.Encoder.AddressSpace) : null)
            {
                using (ImportContext context = shared is null ? new ImportContext(rig.Soc.Encoder) : new ImportContext(rig.Soc.Encoder, shared))
                {
                    rig.System.Faults.FailNextCall(ExporterOperation.Attach);
                    Assert.Throws<NotSupportedException>(() => context.Import(handle));
                    Assert.Equal(0, context.Count);
                    Assert.Empty(handle.Buffer.Attachments);

                    using ImportedBuffer imported = context.Import(handle);
                    rig.System.Faults.FailNextCall(ExporterOperation.Map);
                    Assert.Throws<DmaMappingException>(() => imported.Map(DmaDirection.ToDevice));
                    Assert.Equal(0, context.CachedBytes + (shared?.CachedBytes ?? 0));
                    ScatterTable table = imported.Map(DmaDirection.ToDevice);
                    Assert.True(rig.Soc.Encoder.DmaRead(table, 0, new byte[Size]));
                }
            }

            Assert.Empty(handle.Buffer.Attachments);
        }

        rig.AssertNothingLeaked();
    }

    // The operations the contract says must not throw (Detach, Unmap, Unpin), from an exporter that breaks it after
    // doing its work: the attachment's teardown must still finish — the reference dropped, the buffer released once —
    // and the failure must reach the caller.
    [Theory]
    [InlineData(ExporterOperation.Unmap)]
    [InlineData(ExporterOperation.Unpin)]
    [InlineData(ExporterOperation.Detach)]
    public void AttachmentDispose_ExporterTeardownStepThrows_TeardownStillFinishes(ExporterOperation operation)
    {
        var rig = new FaultRig();
        DmaBufHandle handle = rig.Soc.DeviceLocalHeap.Allocate(Size);
        DmaBuffer buffer = handle.Buffer;
        DmaBufAttachment a = handle.Attach(rig.Soc.Gpu);
        a.Map(DmaDirection.ToDevice);
        a.Pin();
        handle.Dispose(); // the attachment holds the last reference
        rig.DeviceLocal.Faults.FailNextCall(operation);

        Exception e = Assert.ThrowsAny<Exception>(a.Dispose);

        Assert.Contains(Flatten(e), x => x is InjectedFaultException);
        Assert.True(a.IsDetached);
        Assert.True(buffer.State == DmaBufState.Released,
            $"after the exporter's {operation} threw in Dispose the buffer is {buffer.State}: {buffer.Attachments.Count} attachment(s) still listed, {buffer.ReferenceCount} reference(s)");
        Assert.Equal(1, rig.DeviceLocal.Faults.Calls(ExporterOperation.Release));
        rig.AssertNothingLeaked();
    }

    private static IEnumerable<Exception> Flatten(Exception e)
    {
        yield return e;
        if (e is AggregateException a)
        {
            foreach (Exception inner in a.InnerExceptions.SelectMany(Flatten))
            {
                yield return inner;
            }
        }
        else if (e.InnerException is { } inner)
        {
            foreach (Exception x in Flatten(inner))
            {
                yield return x;
            }
        }
    }

    private sealed class NullImporter : IDmaBufImporter
    {
        public void MoveNotify(DmaBufAttachment attachment)
        {
        }
    }
}

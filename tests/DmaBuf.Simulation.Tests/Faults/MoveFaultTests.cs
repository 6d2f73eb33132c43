using DmaBuf.Testing;

namespace DmaBuf.Simulation.Tests;

/// <summary>
/// A device-local move whose relocation runs out of memory (issue 11, item 2): a failed move leaves the buffer, its
/// metadata entries and its cached mappings exactly as they were, and the later release still runs every callback and
/// <see cref="IDmaBufExporter.Release"/> once.
/// </summary>
public sealed class MoveFaultTests
{
    private const int Size = 64 * 1024;

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Move_RelocationOutOfMemory_LeavesEntriesAndMappingsAsTheyWere(bool compact)
    {
        var rig = new FaultRig();
        var key = new MetadataKey<CachedMapping>("display mapping");
        byte[] data = [.. Enumerable.Range(0, Size).Select(i => (byte)(i * 7 + 3))];
        var importer = new CountingImporter();
        CachedMapping entry;
        using (var owner = new MetadataOwner("display driver"))
        {
            DmaBufHandle handle = rig.Soc.DeviceLocalHeap.Allocate(Size, "vram");
            DmaBuffer buffer = handle.Buffer;
            DmaBufAttachment gpu = handle.Attach(rig.Soc.Gpu, importer: importer);
            ScatterTable cached = gpu.MapCached(DmaDirection.Bidirectional, out _);
            Assert.True(rig.Soc.Gpu.DmaWrite(cached, 0, data));
            entry = buffer.Metadata.GetOrAddMapping(key, owner, rig.Soc.Display, DmaDirection.ToDevice, out _);
            ScatterTable placement = rig.Soc.DeviceLocalHeap.AllocationOf(buffer).Physical;
            rig.Hardware.FailFromCall(compact ? SimFaultSite.ContiguousAllocation : SimFaultSite.PageAllocation, 1);

            Assert.Throws<OutOfMemoryException>(() => (compact ? (Func<DmaBufHandle, int>)rig.Soc.DeviceLocalHeap.Compact : rig.Soc.DeviceLocalHeap.Evict)(handle));

            rig.Hardware.Heal();
            Assert.Same(placement, rig.Soc.DeviceLocalHeap.AllocationOf(buffer).Physical);
            Assert.False(entry.IsReleased, "a failed move released a metadata entry");
            Assert.True(buffer.Metadata.Count == 1, $"a failed move left {buffer.Metadata.Count} metadata entries of 1 (dropped without its release callback: entry released = {entry.IsReleased})");
            Assert.True(gpu.HasCachedMapping, "a failed move dropped a cached mapping");
            Assert.Equal(0, importer.Notifications);
            byte[] read = new byte[Size];
            Assert.True(rig.Soc.Display.DmaRead(entry.Table, 0, read), "the entry's mapping no longer translates");
            Assert.Equal(data, read);

            gpu.Dispose();
            handle.Dispose();
            Assert.Equal(DmaBufState.Released, buffer.State);
            Assert.True(entry.IsReleased);
        }

        Assert.Equal(1, rig.DeviceLocal.Faults.Calls(ExporterOperation.Release));
        rig.AssertNothingLeaked();
    }

    [Fact]
    public void Move_Succeeds_AfterAFailedOne()
    {
        var rig = new FaultRig();
        using (DmaBufHandle handle = rig.Soc.DeviceLocalHeap.Allocate(Size))
        {
            rig.Hardware.FailNextCall(SimFaultSite.ContiguousAllocation);
            Assert.Throws<OutOfMemoryException>(() => rig.Soc.DeviceLocalHeap.Compact(handle));

            rig.Soc.DeviceLocalHeap.Compact(handle);

            Assert.Equal(1, rig.Soc.DeviceLocalHeap.AllocationOf(handle.Buffer).Moves);
        }

        rig.AssertNothingLeaked();
    }

    private sealed class CountingImporter : IDmaBufImporter
    {
        public int Notifications { get; private set; }

        public void MoveNotify(DmaBufAttachment attachment) => Notifications++;
    }
}

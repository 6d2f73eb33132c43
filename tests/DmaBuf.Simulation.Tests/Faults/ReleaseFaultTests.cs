using DmaBuf.Testing;

namespace DmaBuf.Simulation.Tests;

/// <summary>
/// A metadata release callback that throws (issue 11, item 5): the other callbacks, the cached mappings' teardown and
/// <see cref="IDmaBufExporter.Release"/> still run, once each, and the failure is reported (rule 11).
/// </summary>
public sealed class ReleaseFaultTests
{
    [Fact]
    public void Release_AMetadataCallbackThrows_EverythingElseStillRunsOnce()
    {
        var rig = new FaultRig();
        var mappingKey = new MetadataKey<CachedMapping>("gpu mapping");
        var before = new MetadataKey<object>("older entry");
        var thrower = new MetadataKey<object>("throwing entry");
        var after = new MetadataKey<object>("newer entry");
        int olderReleases = 0, newerReleases = 0;
        using var owner = new MetadataOwner("driver");
        DmaBufHandle handle = rig.Soc.SystemHeap.Allocate(64 * 1024);
        DmaBuffer buffer = handle.Buffer;
        CachedMapping mapping = buffer.Metadata.GetOrAddMapping(mappingKey, owner, rig.Soc.Gpu, DmaDirection.ToDevice, out _);
        buffer.Metadata.GetOrAdd(before, owner, _ => new object(), (_, _) => olderReleases++);
        buffer.Metadata.GetOrAdd(thrower, owner, _ => new object(), (_, _) => throw new InjectedFaultException("release callback"));
        buffer.Metadata.GetOrAdd(after, owner, _ => new object(), (_, _) => newerReleases++);

        Exception e = Assert.ThrowsAny<Exception>(handle.Dispose);

        Assert.Contains("release callback", e.ToString(), StringComparison.Ordinal);
        Assert.True(newerReleases == 1, $"the newer entry's callback ran {newerReleases} times");
        Assert.True(olderReleases == 1, $"after a newer entry's callback threw, the older entry's callback ran {olderReleases} times");
        Assert.True(mapping.IsReleased);
        Assert.Equal(DmaBufState.Released, buffer.State);
        Assert.Equal(1, rig.System.Faults.Calls(ExporterOperation.Release));
        rig.AssertNothingLeaked();
    }
}

namespace DmaBuf.Stress.Tests;

/// <summary>The race checks themselves: each catches what it is there to catch, with no race needed.</summary>
public sealed class RaceWorldTests
{
    [Fact]
    public void Verify_BufferNeverReleased_ReportsTheLeak()
    {
        var world = new RaceWorld();
        using DmaBufHandle handle = world.Export();

        RaceViolationException e = Assert.Throws<RaceViolationException>(() => world.Verify(handle.Buffer));

        Assert.Contains("Release ran 0 times", e.Message, StringComparison.Ordinal);
        Assert.Contains("1 buffer(s) left in the registry", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Verify_ReleaseWithAnAttachmentLeft_ReportsIt()
    {
        var world = new RaceWorld();
        DmaBufHandle handle = world.Export();
        DmaBuffer buffer = handle.Buffer;
        DmaBufAttachment attachment = handle.Attach(world.Device);
        world.Exporter.Release(buffer); // what a release that met an attachment on its way would do
        attachment.Dispose();
        handle.Dispose();

        RaceViolationException e = Assert.Throws<RaceViolationException>(() => world.Verify(buffer));

        Assert.Contains("with 1 attachment(s) and 0 mapping(s) left", e.Message, StringComparison.Ordinal);
        Assert.Contains("Release ran 2 times", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Verify_EverythingReleasedOnce_Passes()
    {
        var world = new RaceWorld();
        DmaBufHandle handle = world.Export();
        DmaBuffer buffer = handle.Buffer;
        DmaBufAttachment attachment = handle.Attach(world.Device);
        attachment.Map(DmaDirection.Bidirectional);
        handle.Dispose();
        attachment.Dispose();

        world.Verify(buffer);
    }

    [Fact]
    public void Verify_ValueNeverReleased_ReportsIt()
    {
        var world = new RaceWorld();
        DmaBufHandle handle = world.Export();
        DmaBuffer buffer = handle.Buffer;
        world.NewTag(buffer); // made by a factory but never stored nor released
        handle.Dispose();

        RaceViolationException e = Assert.Throws<RaceViolationException>(() => world.Verify(buffer));

        Assert.Contains("released 0 times", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Side_UnexpectedException_IsReportedByVerify()
    {
        var world = new RaceWorld();
        DmaBufHandle handle = world.Export();
        DmaBuffer buffer = handle.Buffer;
        await RaceWorld.Race(world.Side(() => throw new InvalidOperationException("boom")), world.Side(handle.Dispose));

        RaceViolationException e = Assert.Throws<RaceViolationException>(() => world.Verify(buffer));

        Assert.Contains("InvalidOperationException: boom", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void StaleMapsOf_MappingOfTheOldPlacement_IsCounted()
    {
        var world = new RaceWorld();
        using DmaBufHandle handle = world.Export();
        using DmaBufAttachment attachment = handle.Attach(world.Device);
        attachment.Map(DmaDirection.Bidirectional);

        world.Exporter.Relocate(handle.Buffer); // a relocation the framework did not run: the mapping is now stale

        Assert.Equal(1, world.Exporter.StaleMapsOf(handle.Buffer));
    }
}

#pragma warning disable CA2000 // each scenario disposes what it made after the race, where the checks expect it
namespace DmaBuf.Stress;

/// <summary>
/// The races of design §7 and issue 11, each one iteration: a fresh buffer, the sides started together with
/// <see cref="Task.Run(Action)"/>, and the outcome checked after all of them finished. The same code runs on real
/// threads (<see cref="RaceRunner.RunOnThreads"/>) and, from a copy rewritten by Coyote, under Coyote's scheduler,
/// which explores the interleavings of their tasks, monitors, volatile and interlocked operations.
/// </summary>
/// <remarks>
/// Every scenario ends with <c>RaceWorld.Verify</c>: no side saw an exception other than the
/// <see cref="ObjectDisposedException"/> a loser may get (the last <c>Dispose</c> never throws, in particular not
/// "attachment(s) outlived the buffer's references"), the exporter's <c>Release</c> ran exactly once per buffer with
/// nothing attached or mapped, every metadata value made was released exactly once, and the registry is empty.
/// A failure throws <see cref="RaceViolationException"/>.
/// </remarks>
public static class RaceScenarios
{
    /// <summary>Every scenario by name, for a command that runs them all.</summary>
    public static IReadOnlyList<(string Name, Func<Task> Run)> All { get; } =
    [
        (nameof(CloseVsReimportPerAttachmentAsync), CloseVsReimportPerAttachmentAsync),
        (nameof(CloseVsReimportPerAddressSpaceAsync), CloseVsReimportPerAddressSpaceAsync),
        (nameof(ExportVsCloseAsync), ExportVsCloseAsync),
        (nameof(ReleaseVsAttachAsync), ReleaseVsAttachAsync),
        (nameof(ReleaseVsMetadataAddAsync), ReleaseVsMetadataAddAsync),
        (nameof(ReleaseVsCachedMappingAddAsync), ReleaseVsCachedMappingAddAsync),
        (nameof(OwnerTeardownVsReleaseAsync), OwnerTeardownVsReleaseAsync),
        (nameof(ImportContextDisposeVsReleasePerAttachmentAsync), ImportContextDisposeVsReleasePerAttachmentAsync),
        (nameof(ImportContextDisposeVsReleasePerAddressSpaceAsync), ImportContextDisposeVsReleasePerAddressSpaceAsync),
        (nameof(EvictionVsReleaseAsync), EvictionVsReleaseAsync),
        (nameof(MoveVsMapAsync), MoveVsMapAsync),
        (nameof(MoveVsMetadataAddAsync), MoveVsMetadataAddAsync),
    ];

    /// <summary>IGT's reimport-vs-gem_close-race with an exporter-cache import context: the first import races the last close.</summary>
    public static Task CloseVsReimportPerAttachmentAsync() => CloseVsReimportAsync(ImportMappingMode.PerAttachment);

    /// <summary>The same with a per-address-space (domain-share) import context.</summary>
    public static Task CloseVsReimportPerAddressSpaceAsync() => CloseVsReimportAsync(ImportMappingMode.PerAddressSpace);

    /// <summary>
    /// One side imports and maps the buffer (the import's factory attaches on the buffer's behalf); the other drops the
    /// last reference. Either the import wins and the release takes it down, or the import sees a disposed buffer.
    /// </summary>
    public static async Task CloseVsReimportAsync(ImportMappingMode mode)
    {
        var world = new RaceWorld();
        DmaBufHandle handle = world.Export();
        DmaBuffer buffer = handle.Buffer;
        (ImportContext context, SharedMappingCache? shared) = world.Context(mode);
        await RaceWorld.Race(
            world.Side(() =>
            {
                using ImportedBuffer imported = context.Import(handle);
                imported.Map(DmaDirection.Bidirectional);
            }),
            world.Side(handle.Dispose));
        world.After(context.Dispose);
        world.After(() => shared?.Dispose());
        world.Verify(buffer);
    }

    /// <summary>
    /// IGT's export-vs-gem_close-race: one side takes new references (Duplicate, and TryAddReference as a cache that
    /// found the buffer without holding it would), the other drops the last one. A reference taken keeps the buffer
    /// live; none is ever taken on a released buffer.
    /// </summary>
    public static async Task ExportVsCloseAsync()
    {
        var world = new RaceWorld();
        DmaBufHandle handle = world.Export();
        DmaBuffer buffer = handle.Buffer;
        DmaBufHandle? duplicate = null, found = null;
        await RaceWorld.Race(
            world.Side(() =>
            {
                found = buffer.TryAddReference();
                duplicate = handle.Duplicate();
            }),
            world.Side(handle.Dispose));
        foreach (DmaBufHandle? held in new[] { found, duplicate })
        {
            if (held is not null)
            {
                RaceWorld.Check(buffer.State == DmaBufState.Live, $"a reference was taken on a buffer that is {buffer.State}");
                world.After(held.Dispose);
            }
        }

        world.Verify(buffer);
    }

    /// <summary>An importer attaches and maps through a handle whose last reference is being dropped.</summary>
    public static async Task ReleaseVsAttachAsync()
    {
        var world = new RaceWorld();
        DmaBufHandle handle = world.Export();
        DmaBuffer buffer = handle.Buffer;
        await RaceWorld.Race(
            world.Side(() =>
            {
                using DmaBufAttachment attachment = handle.Attach(world.Device);
                ScatterTable table = attachment.Map(DmaDirection.Bidirectional);
                attachment.Unmap(table);
            }),
            world.Side(handle.Dispose));
        world.Verify(buffer);
    }

    /// <summary><see cref="BufferMetadata.GetOrAdd{T}"/> on a buffer whose last reference is being dropped.</summary>
    public static async Task ReleaseVsMetadataAddAsync()
    {
        var world = new RaceWorld();
        DmaBufHandle handle = world.Export();
        DmaBuffer buffer = handle.Buffer;
        var owner = new MetadataOwner("race owner");
        await RaceWorld.Race(
            world.Side(() => buffer.Metadata.GetOrAdd(world.PlacedKey, owner, world.NewTag, static (t, r) => t.Released(r))),
            world.Side(handle.Dispose));
        world.After(owner.Dispose);
        world.Verify(buffer);
    }

    /// <summary>
    /// <see cref="CachedMappingExtensions.GetOrAddMapping"/> (which attaches and maps on the buffer's behalf) on a
    /// buffer whose last reference is being dropped.
    /// </summary>
    public static async Task ReleaseVsCachedMappingAddAsync()
    {
        var world = new RaceWorld();
        DmaBufHandle handle = world.Export();
        DmaBuffer buffer = handle.Buffer;
        var owner = new MetadataOwner("race owner");
        await RaceWorld.Race(
            world.Side(() => buffer.Metadata.GetOrAddMapping(world.MapKey, owner, world.Device, DmaDirection.Bidirectional, out _)),
            world.Side(handle.Dispose));
        world.After(owner.Dispose);
        world.Verify(buffer);
    }

    /// <summary>An owner with a value and a cached mapping on the buffer is torn down while the last reference goes.</summary>
    public static async Task OwnerTeardownVsReleaseAsync()
    {
        var world = new RaceWorld();
        DmaBufHandle handle = world.Export();
        DmaBuffer buffer = handle.Buffer;
        var owner = new MetadataOwner("race owner");
        RaceTag tag = buffer.Metadata.GetOrAdd(world.PlacedKey, owner, world.NewTag, static (t, r) => t.Released(r));
        CachedMapping mapping = buffer.Metadata.GetOrAddMapping(world.MapKey, owner, world.Device, DmaDirection.Bidirectional, out _);
        await RaceWorld.Race(world.Side(owner.Dispose), world.Side(handle.Dispose));
        RaceWorld.Check(
            tag.Reason is MetadataReleaseReason.OwnerTeardown or MetadataReleaseReason.BufferReleased,
            $"the value was released for {tag.Reason}, not for the owner's teardown or the buffer's release");
        RaceWorld.Check(mapping.IsReleased, "the cached mapping was not released");
        world.Verify(buffer);
    }

    /// <summary>An exporter-cache import context is disposed while the imported buffer's last reference goes.</summary>
    public static Task ImportContextDisposeVsReleasePerAttachmentAsync() => ImportContextDisposeVsReleaseAsync(ImportMappingMode.PerAttachment);

    /// <summary>A domain-share import context is disposed while the imported buffer's last reference goes.</summary>
    public static Task ImportContextDisposeVsReleasePerAddressSpaceAsync() => ImportContextDisposeVsReleaseAsync(ImportMappingMode.PerAddressSpace);

    /// <summary>An import context with a mapped import is disposed while the buffer's last reference goes.</summary>
    public static async Task ImportContextDisposeVsReleaseAsync(ImportMappingMode mode)
    {
        var world = new RaceWorld();
        DmaBufHandle handle = world.Export();
        DmaBuffer buffer = handle.Buffer;
        (ImportContext context, SharedMappingCache? shared) = world.Context(mode);
        ImportedBuffer imported = context.Import(handle);
        imported.Map(DmaDirection.Bidirectional);
        imported.Dispose();
        await RaceWorld.Race(world.Side(context.Dispose), world.Side(handle.Dispose));
        RaceWorld.Check(imported.IsReleased, "the import outlived both its context and its buffer");
        world.After(() => shared?.Dispose());
        world.Verify(buffer);
    }

    /// <summary>
    /// A budget of one buffer: mapping a second import evicts the first, whose buffer's last reference is being
    /// dropped at the same time.
    /// </summary>
    public static async Task EvictionVsReleaseAsync()
    {
        var world = new RaceWorld();
        DmaBufHandle first = world.Export(), second = world.Export();
        DmaBuffer firstBuffer = first.Buffer, secondBuffer = second.Buffer;
        var context = new ImportContext(world.Device, ImportMappingMode.PerAttachment, budgetBytes: 4096);
        ImportedBuffer old = context.Import(first);
        old.Map(DmaDirection.Bidirectional);
        old.Dispose();
        await RaceWorld.Race(
            world.Side(() =>
            {
                using ImportedBuffer imported = context.Import(second);
                imported.Map(DmaDirection.Bidirectional);
            }),
            world.Side(first.Dispose));
        RaceWorld.Check(old.IsReleased, "the evicted or released import is still live");
        world.After(second.Dispose);
        world.After(context.Dispose);
        world.Verify(firstBuffer, secondBuffer);
    }

    /// <summary>
    /// A dynamic exporter moves the buffer while an import maps it and a static importer attaches and maps it. The move
    /// is refused while a static mapping pins the buffer; otherwise no mapping of the old placement survives it.
    /// </summary>
    public static async Task MoveVsMapAsync()
    {
        var world = new RaceWorld();
        DmaBufHandle handle = world.Export();
        DmaBuffer buffer = handle.Buffer;
        var context = new ImportContext(world.Device, ImportMappingMode.PerAttachment);
        await RaceWorld.Race(
            world.Side(() => buffer.Move(world.Exporter.Relocate), typeof(InvalidOperationException)),
            world.Side(() =>
            {
                using (ImportedBuffer imported = context.Import(handle))
                {
                    imported.Map(DmaDirection.Bidirectional);
                }

                using DmaBufAttachment attachment = handle.Attach(world.Device);
                ScatterTable table = attachment.Map(DmaDirection.ToDevice);
                RaceWorld.Check(world.Exporter.StaleMapsOf(buffer) == 0, "a static mapping points at a placement the buffer moved from");
                attachment.Unmap(table);
            }));
        int stale = world.Exporter.StaleMapsOf(buffer);
        RaceWorld.Check(stale == 0, $"{stale} cached mapping(s) survived the move, pointing at the old placement");
        world.After(context.Dispose);
        world.After(handle.Dispose);
        world.Verify(buffer);
    }

    /// <summary>
    /// A move races a metadata add whose factory reads the placement (a value and a cached mapping, both
    /// placement-dependent): whichever wins, no entry added on the buffer describes the placement it left.
    /// </summary>
    public static async Task MoveVsMetadataAddAsync()
    {
        var world = new RaceWorld();
        DmaBufHandle handle = world.Export();
        DmaBuffer buffer = handle.Buffer;
        var owner = new MetadataOwner("race owner");
        await RaceWorld.Race(
            world.Side(() => buffer.Move(world.Exporter.Relocate)),
            world.Side(() =>
            {
                buffer.Metadata.GetOrAdd(world.PlacedKey, owner, world.NewTag, static (t, r) => t.Released(r));
                buffer.Metadata.GetOrAddMapping(world.MapKey, owner, world.Device, DmaDirection.Bidirectional, out _);
            }));
        int generation = RaceExporter.GenerationOf(buffer);
        if (buffer.Metadata.TryGet(world.PlacedKey, owner, out RaceTag? tag))
        {
            RaceWorld.Check(tag.Generation == generation, $"a value made for placement {tag.Generation} survived the move to placement {generation}");
        }

        int stale = world.Exporter.StaleMapsOf(buffer);
        RaceWorld.Check(stale == 0, $"{stale} cached mapping(s) survived the move, pointing at the old placement");
        world.After(handle.Dispose);
        world.After(owner.Dispose);
        world.Verify(buffer);
    }
}

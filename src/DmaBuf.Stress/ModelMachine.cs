// Ownership: the machine owns everything it creates on its private SoC (handles, attachments, owners, contexts) and
// gives all of it back in Teardown, which is part of every program, so a leak at the end is a violation like any other.
#pragma warning disable CA2000 // handles, attachments and contexts live in the machine's tables until Teardown disposes them
using System.Globalization;
using System.Text;
using DmaBuf.Simulation;

namespace DmaBuf.Stress;

/// <summary>
/// Runs a <see cref="ModelProgram"/> against a fresh simulated SoC and, beside it, a plain model of what the public API
/// promises; checks the two agree after every step and records each step as C#.
/// </summary>
internal sealed partial class ModelMachine
{
    private const long MemoryBytes = 2L << 20;
    private const long ContiguousBytes = 256L << 10;
    private static readonly int[] s_pages = [1, 2, 3, 4, 16, 17];
    private static readonly int[] s_lengths = [1, 100, 4096, 5000, int.MaxValue];
    private static readonly long[] s_budgets = [long.MaxValue, 4 * PhysicalMemory.PageSize, 20 * PhysicalMemory.PageSize];
    private static readonly DmaDirection[] s_directions = [DmaDirection.ToDevice, DmaDirection.FromDevice, DmaDirection.Bidirectional];
    private static readonly CostProfile s_profile = CostProfile.Load("smmuv3-strict");

    private readonly Soc _soc;
    private readonly StringBuilder _code = new();
    private readonly MetadataKey<Tag> _placed = new("placed");
    private readonly MetadataKey<Tag> _unplaced = new("unplaced", dependsOnPlacement: false);
    private readonly MetadataKey<CachedMapping> _mapKey = new("mapping");
    private readonly List<MBuffer> _buffers = [];
    private readonly List<MHandle> _handles = [];
    private readonly List<MAttachment> _attachments = [];
    private readonly List<MMapping> _mappings = [];
    private readonly MOwner[] _owners = new MOwner[2];
    private readonly List<MEntry> _entries = [];
    private readonly List<Tag> _tags = [];
    private readonly List<MCached> _cached = [];
    private readonly List<MContext> _contexts = [];
    private readonly List<MImport> _imports = [];
    private readonly Dictionary<(MBuffer, IDmaAddressSpace), MMapping> _domainMappings = [];
    private readonly Dictionary<SimHeap, long> _expectedReleases = [];
    private readonly List<string> _thrown = [];
    private readonly Dictionary<IDmaAddressSpace, MShared> _sharedCaches = [];
    private int _nextVar;
    private int _steps;
    private string? _violation;

    private readonly bool _zeroed;
    private readonly ImportMappingMode[] _modes;

    private ModelMachine(ModelProgram program, ModelRunOptions options)
    {
        _zeroed = options.FreshMemoryZeroed;
        _modes = [.. options.ImportModes.Order()];
        _soc = new Soc(new SocOptions
        {
            MemoryBytes = MemoryBytes,
            ContiguousBytes = ContiguousBytes,
            Topology = program.Topology,
            Seed = program.MemorySeed,
            Profile = s_profile,
        });
        foreach (SimHeap heap in Heaps)
        {
            _expectedReleases[heap] = 0;
        }

        Line("// using DmaBuf; using DmaBuf.Simulation; using DmaBuf.Stress;");
        Line($"var soc = new Soc(new SocOptions {{ MemoryBytes = {MemoryBytes}, ContiguousBytes = {ContiguousBytes}, Topology = Topology.{program.Topology}, Seed = {program.MemorySeed} }});");
        Line("var placed = new MetadataKey<string>(\"placed\");");
        Line("var unplaced = new MetadataKey<string>(\"unplaced\", dependsOnPlacement: false);");
        Line("var mapKey = new MetadataKey<CachedMapping>(\"mapping\");");
        Line("var released = new List<(string Value, MetadataReleaseReason Reason)>();");
        for (int i = 0; i < _owners.Length; i++)
        {
            _owners[i] = NewOwner();
        }
    }

    private IEnumerable<SimHeap> Heaps => [_soc.SystemHeap, _soc.ContiguousHeap, _soc.DeviceLocalHeap];

    /// <summary>Runs <paramref name="program"/>, teardown included, stopping at the first violation.</summary>
    public static ModelProgramResult Run(ModelProgram program, ModelRunOptions options)
    {
        var machine = new ModelMachine(program, options);
        machine.RunAll(program.Ops);
        return new ModelProgramResult(machine._steps, machine._violation, machine._code.ToString());
    }

    private void RunAll(IReadOnlyList<ModelOp> ops)
    {
        foreach (ModelOp op in ops)
        {
            if (!Step(op))
            {
                return;
            }
        }

        // Teardown is steps too: everything given back, in an order whose release reasons the model knows.
        while (_imports.Any(i => i.Uses > 0))
        {
            if (!Step(new ModelOp(ModelOpKind.EndUse, _imports.FindIndex(i => i.Uses > 0), 0, 0, 0)))
            {
                return;
            }
        }

        while (_contexts.Count > 0)
        {
            if (!Step(new ModelOp(ModelOpKind.DisposeContext, 0, 0, 0, 0)))
            {
                return;
            }
        }

        foreach (MShared shared in _sharedCaches.Values.ToList())
        {
            if (!Step(() => DisposeSharedCache(shared)))
            {
                return;
            }
        }

        while (_attachments.Count > 0)
        {
            if (!Step(new ModelOp(ModelOpKind.Detach, 0, 0, 0, 0)))
            {
                return;
            }
        }

        while (_handles.Count > 0)
        {
            if (!Step(new ModelOp(ModelOpKind.DisposeHandle, 0, 0, 0, 0)))
            {
                return;
            }
        }

        for (int i = 0; i < _owners.Length; i++)
        {
            if (!Step(new ModelOp(ModelOpKind.OwnerTeardown, i, 0, 0, 0)))
            {
                return;
            }
        }

        CheckFinal();
    }

    private bool Step(ModelOp op) => Step(() => Execute(op), op.ToString());

    private bool Step(Action action, string? what = null)
    {
        _steps++;
        _thrown.Clear();
        Dictionary<Tag, int> releasesBefore = _tags.Where(t => t.Throws).ToDictionary(t => t, t => t.Releases);
        try
        {
            action();
        }
        catch (Exception e) when (_violation is null)
        {
            Fail($"{what ?? "teardown"} threw {e.GetType().Name}: {e.Message}");
        }

        // Rule 11: a throwing release callback does not stop the others or the release, and its exception is reported.
        foreach (Tag t in _tags.Where(t => t.Throws && t.Releases > releasesBefore.GetValueOrDefault(t)))
        {
            Expect(_thrown.Remove(t.Name), $"the exception of {t.Name}'s release callback was not reported");
        }

        Expect(_thrown.Count == 0, $"callback exceptions reported for values not released in this step: {string.Join(", ", _thrown)}");
        if (_violation is null)
        {
            CheckInvariants();
        }

        if (_violation is not null)
        {
            Line($"// violation after step {_steps} ({what ?? "teardown"}): {_violation}");
            return false;
        }

        return true;
    }

    private void Execute(ModelOp op)
    {
        switch (op.Kind)
        {
            case ModelOpKind.Allocate: Allocate(op); break;
            case ModelOpKind.Duplicate: Duplicate(op); break;
            case ModelOpKind.DisposeHandle: DisposeHandle(op); break;
            case ModelOpKind.Attach: Attach(op); break;
            case ModelOpKind.Detach: Detach(op); break;
            case ModelOpKind.Map: Map(op); break;
            case ModelOpKind.Unmap: Unmap(op); break;
            case ModelOpKind.Pin: Pin(op); break;
            case ModelOpKind.Unpin: Unpin(op); break;
            case ModelOpKind.MetadataAdd: MetadataAdd(op); break;
            case ModelOpKind.MetadataGet: MetadataGet(op); break;
            case ModelOpKind.MetadataRemove: MetadataRemove(op); break;
            case ModelOpKind.OwnerTeardown: OwnerTeardown(op); break;
            case ModelOpKind.CachedMapping: CachedMappingOp(op); break;
            case ModelOpKind.CreateContext: CreateContext(op); break;
            case ModelOpKind.DisposeContext: DisposeContext(op); break;
            case ModelOpKind.Import: Import(op); break;
            case ModelOpKind.ImportMap: ImportMap(op); break;
            case ModelOpKind.EndUse: EndUse(op); break;
            case ModelOpKind.Move: Move(op); break;
            case ModelOpKind.DmaWrite: DmaWrite(op); break;
            case ModelOpKind.DmaRead: DmaRead(op); break;
            case ModelOpKind.CpuWrite: CpuWrite(op); break;
            case ModelOpKind.CpuRead: CpuRead(op); break;
            default: throw new ArgumentOutOfRangeException(nameof(op), op.Kind, "unknown operation");
        }
    }

    // ---- references ----

    private void Allocate(ModelOp op)
    {
        (SimHeap heap, string heapCode) = Pick(op.A, 3) switch
        {
            0 => ((SimHeap)_soc.SystemHeap, "soc.SystemHeap"),
            1 => (_soc.ContiguousHeap, "soc.ContiguousHeap"),
            _ => (_soc.DeviceLocalHeap, "soc.DeviceLocalHeap"),
        };
        long size = (long)s_pages[Pick(op.B, s_pages.Length)] * PhysicalMemory.PageSize;
        string v = Var("h");
        long pagesBefore = _soc.Memory.AllocatedPages;
        DmaBufHandle handle;
        try
        {
            handle = heap.Allocate(size);
        }
        catch (OutOfMemoryException)
        {
            Line($"// {heapCode}.Allocate({size}) throws OutOfMemoryException");
            Expect(_soc.Memory.AllocatedPages == pagesBefore, $"a failed allocation kept {_soc.Memory.AllocatedPages - pagesBefore} pages");
            return;
        }

        Line($"var {v} = {heapCode}.Allocate({size});");
        var buffer = new MBuffer(handle.Buffer, heap, size, v, _zeroed);
        _buffers.Add(buffer);
        _handles.Add(new MHandle(handle, buffer, v));
        buffer.Handles = 1;
    }

    private void Duplicate(ModelOp op)
    {
        if (PickFrom(_handles, op.A) is not { } h)
        {
            return;
        }

        string v = Var("h");
        Line($"var {v} = {h.Var}.Duplicate();");
        DmaBufHandle dup = h.Handle.Duplicate();
        Expect(ReferenceEquals(dup.Buffer, h.Buffer.Buffer), "Duplicate returned another buffer");
        _handles.Add(new MHandle(dup, h.Buffer, v));
        h.Buffer.Handles++;
    }

    private void DisposeHandle(ModelOp op)
    {
        if (PickFrom(_handles, op.A) is not { } h)
        {
            return;
        }

        Line($"{h.Var}.Dispose();");
        _handles.Remove(h);
        h.Buffer.Handles--;
        Releasing(h.Handle.Dispose);
        ReleaseIfUnreferenced(h.Buffer);
    }

    private void ReleaseIfUnreferenced(MBuffer b)
    {
        if (b.Handles > 0 || b.Attachments > 0)
        {
            return;
        }

        // Rule 1: released exactly once, its cached state first (every entry: BufferReleased), then the exporter.
        Expect(b.Buffer.State == DmaBufState.Released, $"{b.Var} is {b.Buffer.State} after its last reference went");
        b.Released = true;
        _buffers.Remove(b);
        _expectedReleases[b.Heap]++;
        foreach (MEntry e in _entries.Where(e => e.Buffer == b).ToList())
        {
            ExpectRelease(e, MetadataReleaseReason.BufferReleased);
        }

        foreach (MCached c in _cached.Where(c => c.Buffer == b).ToList())
        {
            DropCached(c);
        }

        foreach (MImport i in _imports.Where(i => i.Buffer == b).ToList())
        {
            DropImport(i);
        }

        DropDomainMappings(b);
        foreach (MMapping m in _mappings.Where(m => m.Buffer == b).ToList())
        {
            Invalidate(m);
        }
    }

    // ---- attachments ----

    private void Attach(ModelOp op)
    {
        if (PickFrom(_handles, op.A) is not { } h)
        {
            return;
        }

        int d = Pick(op.B, _soc.Devices.Count);
        string v = Var("a");
        Line($"var {v} = {h.Var}.Attach(soc.Devices[{d}]);");
        DmaBufAttachment a = h.Handle.Attach(_soc.Devices[d]);
        _attachments.Add(new MAttachment(a, h.Buffer, _soc.Devices[d], v));
        h.Buffer.Attachments++;
    }

    private void Detach(ModelOp op)
    {
        if (PickFrom(_attachments, op.A) is not { } a)
        {
            return;
        }

        Line($"{a.Var}.Dispose();");
        _attachments.Remove(a);
        foreach (MMapping m in a.Maps)
        {
            Invalidate(m);
        }

        a.Maps.Clear();
        a.Pins = 0;
        a.Buffer.Attachments--;
        Releasing(a.Attachment.Dispose);
        Expect(a.Attachment.IsDetached, $"{a.Var} is not detached after Dispose");
        ReleaseIfUnreferenced(a.Buffer);
    }

    private void Map(ModelOp op)
    {
        if (PickFrom(_attachments, op.A) is not { } a)
        {
            return;
        }

        DmaDirection dir = s_directions[Pick(op.B, 3)];
        string v = Var("t");
        Line($"var {v} = {a.Var}.Map(DmaDirection.{dir});");
        ScatterTable t = a.Attachment.Map(dir);
        Expect(t.TotalLength == (ulong)a.Buffer.Size, $"{v} covers {t.TotalLength} bytes of a {a.Buffer.Size}-byte buffer");
        var m = new MMapping(a.Device, t, dir, a.Buffer, v);
        a.Maps.Add(m);
        _mappings.Add(m);
    }

    private void Unmap(ModelOp op)
    {
        if (PickFrom(_attachments, op.A) is not { } a || PickFrom(a.Maps, op.B) is not { } m)
        {
            return;
        }

        Line($"{a.Var}.Unmap({m.Var});");
        a.Maps.Remove(m);
        Invalidate(m);
        a.Attachment.Unmap(m.Table);
    }

    private void Pin(ModelOp op)
    {
        if (PickFrom(_attachments, op.A) is not { } a)
        {
            return;
        }

        Line($"{a.Var}.Pin();");
        a.Attachment.Pin();
        a.Pins++;
        Expect(a.Attachment.IsPinned, $"{a.Var} is not pinned after Pin");
    }

    private void Unpin(ModelOp op)
    {
        if (PickFrom(_attachments, op.A) is not { } a)
        {
            return;
        }

        if (a.Pins == 0)
        {
            Line($"// {a.Var}.Unpin() throws InvalidOperationException (not pinned)");
            ExpectThrows<InvalidOperationException>(a.Attachment.Unpin, $"Unpin of an unpinned {a.Var}");
            return;
        }

        Line($"{a.Var}.Unpin();");
        a.Attachment.Unpin();
        a.Pins--;
    }

    // ---- metadata ----

    private void MetadataAdd(ModelOp op)
    {
        if (PickFrom(_handles, op.A) is not { } h)
        {
            return;
        }

        bool placedKey = Pick(op.B, 2) == 0;
        MOwner owner = _owners[Pick(op.C, _owners.Length)];
        MEntry? existing = FindEntry(h.Buffer, placedKey, owner);
        bool throws = (op.D & 7) == 7;
        var tag = new Tag($"v{_tags.Count + 1}", throws);
        string key = placedKey ? "placed" : "unplaced";
        string release = throws ? "(v, r) => { released.Add((v, r)); throw new InvalidOperationException(v); }" : "(v, r) => released.Add((v, r))";
        Line($"var {tag.Name} = {h.Var}.Buffer.Metadata.GetOrAdd({key}, {owner.Var}, _ => \"{tag.Name}\", {release});");
        bool created = false;
        Tag got = h.Buffer.Buffer.Metadata.GetOrAdd(
            placedKey ? _placed : _unplaced,
            owner.Owner,
            _ =>
            {
                created = true;
                return tag;
            },
            static (t, r) => t.Released(r));
        if (created)
        {
            _tags.Add(tag);
        }

        if (existing is not null)
        {
            Expect(ReferenceEquals(got, existing.Tag), $"GetOrAdd returned {got.Name}, the stored value is {existing.Tag.Name}");
            if (created)
            {
                // A factory that lost (there is no race here, so it should not have run at all) must be given back.
                Expect(tag.Releases == 1 && tag.Reason == MetadataReleaseReason.Removed, $"an unused value {tag.Name} was released {tag.Releases} times");
                tag.Expected = MetadataReleaseReason.Removed;
            }

            return;
        }

        Expect(created && ReferenceEquals(got, tag), "GetOrAdd did not store the new value");
        _entries.Add(new MEntry(h.Buffer, placedKey, owner, tag));
    }

    private void MetadataGet(ModelOp op)
    {
        if (PickFrom(_handles, op.A) is not { } h)
        {
            return;
        }

        bool placedKey = Pick(op.B, 2) == 0;
        MOwner owner = _owners[Pick(op.C, _owners.Length)];
        MEntry? existing = FindEntry(h.Buffer, placedKey, owner);
        Line($"{h.Var}.Buffer.Metadata.TryGet({(placedKey ? "placed" : "unplaced")}, {owner.Var}, out _); // {(existing is null ? "false" : "true, " + existing.Tag.Name)}");
        bool found = h.Buffer.Buffer.Metadata.TryGet(placedKey ? _placed : _unplaced, owner.Owner, out Tag? value);
        Expect(found == (existing is not null) && ReferenceEquals(value, existing?.Tag), $"TryGet found {(found ? value!.Name : "nothing")}, the model has {existing?.Tag.Name ?? "nothing"}");
    }

    private void MetadataRemove(ModelOp op)
    {
        if (PickFrom(_handles, op.A) is not { } h)
        {
            return;
        }

        bool placedKey = Pick(op.B, 2) == 0;
        MOwner owner = _owners[Pick(op.C, _owners.Length)];
        MEntry? existing = FindEntry(h.Buffer, placedKey, owner);
        Line($"{h.Var}.Buffer.Metadata.Remove({(placedKey ? "placed" : "unplaced")}, {owner.Var}); // {(existing is null ? "false" : "true")}");
        bool removed = existing is not null;
        Releasing(() => removed = h.Buffer.Buffer.Metadata.Remove(placedKey ? _placed : _unplaced, owner.Owner));
        Expect(removed == (existing is not null), $"Remove returned {removed}");
        if (existing is not null)
        {
            ExpectRelease(existing, MetadataReleaseReason.Removed);
        }
    }

    private void OwnerTeardown(ModelOp op)
    {
        int slot = Pick(op.A, _owners.Length);
        MOwner owner = _owners[slot];
        Line($"{owner.Var}.Dispose();");
        Releasing(owner.Owner.Dispose);
        foreach (MEntry e in _entries.Where(e => e.Owner == owner).ToList())
        {
            ExpectRelease(e, MetadataReleaseReason.OwnerTeardown);
        }

        foreach (MCached c in _cached.Where(c => c.Owner == owner).ToList())
        {
            DropCached(c);
        }

        Expect(owner.Owner.IsDisposed && owner.Owner.EntryCount == 0, $"{owner.Var} keeps {owner.Owner.EntryCount} entries after Dispose");
        _owners[slot] = NewOwner();
    }

    private void CachedMappingOp(ModelOp op)
    {
        if (PickFrom(_handles, op.A) is not { } h)
        {
            return;
        }

        MOwner owner = _owners[Pick(op.B, _owners.Length)];
        int d = Pick(op.C, _soc.Devices.Count);
        DmaDirection dir = s_directions[Pick(op.D, 3)];
        MCached? existing = _cached.Find(c => c.Buffer == h.Buffer && c.Owner == owner);
        string v = Var("cm");
        Line($"var {v} = {h.Var}.Buffer.Metadata.GetOrAddMapping(mapKey, {owner.Var}, soc.Devices[{d}], DmaDirection.{dir}, out bool created{_nextVar}); // created: {existing is null}");
        CachedMapping m = h.Buffer.Buffer.Metadata.GetOrAddMapping(_mapKey, owner.Owner, _soc.Devices[d], dir, out bool created);
        if (existing is not null)
        {
            Expect(!created && ReferenceEquals(m, existing.Mapping), "GetOrAddMapping made a second mapping for one (key, owner)");
            return;
        }

        Expect(created && !m.IsReleased, "GetOrAddMapping did not make a live mapping");
        Expect(m.Bytes == h.Buffer.Size, $"{v} covers {m.Bytes} bytes of a {h.Buffer.Size}-byte buffer");
        var table = new MMapping(_soc.Devices[d], m.Table, dir, h.Buffer, $"{v}.Table");
        _mappings.Add(table);
        var entry = new MCached(h.Buffer, owner, m, table);
        _cached.Add(entry);
        _allCached.Add(entry);
    }

    // ---- import contexts ----

    private void CreateContext(ModelOp op)
    {
        if (_contexts.Count >= 4)
        {
            return;
        }

        int d = Pick(op.A, _soc.Devices.Count);
        ImportMappingMode mode = _modes[Pick(op.B, _modes.Length)];
        long budget = s_budgets[Pick(op.C, s_budgets.Length)];
        SimDevice device = _soc.Devices[d];
        if (mode == ImportMappingMode.PerAttachment)
        {
            string v = Var("c");
            Line($"var {v} = new ImportContext(soc.Devices[{d}], ImportMappingMode.{mode}, {(budget == long.MaxValue ? "long.MaxValue" : budget.ToString(CultureInfo.InvariantCulture))});");
            _contexts.Add(new MContext(new ImportContext(device, mode, budget, v), device, v));
            return;
        }

        // Domain-share: one shared mapping cache per address space, made with its first context. Unbounded, so the
        // model knows which shared mappings exist; budgets and eviction are exercised by the per-attachment contexts.
        if (!_sharedCaches.TryGetValue(device.AddressSpace, out MShared? shared))
        {
            string sv = Var("s");
            Line($"var {sv} = new SharedMappingCache(soc.Devices[{d}].AddressSpace);");
            shared = new MShared(new SharedMappingCache(device.AddressSpace, name: sv), sv);
            _sharedCaches[device.AddressSpace] = shared;
        }

        string cv = Var("c");
        Line($"var {cv} = new ImportContext(soc.Devices[{d}], {shared.Var});");
        _contexts.Add(new MContext(new ImportContext(device, shared.Cache), device, cv));
    }

    private void DisposeContext(ModelOp op)
    {
        if (PickFrom(_contexts, op.A) is not { } c)
        {
            return;
        }

        Line($"{c.Var}.Dispose();");
        _contexts.Remove(c);
        Releasing(c.Context.Dispose);
        foreach (MImport i in _imports.Where(i => i.Context == c).ToList())
        {
            DropImport(i);
        }

        Expect(c.Context.Count == 0 && c.Context.EntryCount == 0, $"{c.Var} keeps {c.Context.Count} imports after Dispose");
        ExpectThrows<ObjectDisposedException>(() => c.Context.Import(_handles.Count > 0 ? _handles[0].Handle : null!), $"Import into the disposed {c.Var}", allowArgumentNull: _handles.Count == 0);
    }

    private void DisposeSharedCache(MShared shared)
    {
        Line($"{shared.Var}.Dispose();");
        _sharedCaches.Remove(shared.Cache.AddressSpace);
        Releasing(shared.Cache.Dispose);
        foreach ((MBuffer, IDmaAddressSpace) key in _domainMappings.Keys.Where(k => ReferenceEquals(k.Item2, shared.Cache.AddressSpace)).ToList())
        {
            MMapping m = _domainMappings[key];
            _domainMappings.Remove(key);
            foreach (MMapping view in _mappings.Where(x => x.Shared == m).ToList())
            {
                Invalidate(view);
            }
        }

        Expect(shared.Cache.Count == 0 && shared.Cache.CachedBytes == 0, $"{shared.Var} keeps {shared.Cache.Count} mappings after Dispose");
    }

    private void Import(ModelOp op)
    {
        if (PickFrom(_contexts, op.A) is not { } c || PickFrom(_handles, op.B) is not { } h)
        {
            return;
        }

        MImport? existing = _imports.Find(i => i.Context == c && i.Buffer == h.Buffer);
        string v = existing?.Var ?? Var("i");
        Line(existing is null ? $"var {v} = {c.Var}.Import({h.Var});" : $"{c.Var}.Import({h.Var}); // the same {v} again");
        ImportedBuffer imp = c.Context.Import(h.Handle);
        if (existing is not null)
        {
            Expect(ReferenceEquals(imp, existing.Imported), $"a second import of {h.Buffer.Var} into {c.Var} gave another object");
            existing.Uses++;
            return;
        }

        Expect(!imp.IsReleased && ReferenceEquals(imp.Buffer, h.Buffer.Buffer), $"{v} is not a live import of {h.Buffer.Var}");
        var added = new MImport(c, h.Buffer, imp, v) { Uses = 1 };
        _imports.Add(added);
        _allImports.Add(added);
    }

    private void ImportMap(ModelOp op)
    {
        if (PickFrom(_imports, op.A) is not { } i)
        {
            return;
        }

        DmaDirection dir = s_directions[Pick(op.B, 3)];
        string v = Var("t");
        HashSet<MImport> before = [.. _imports.Where(x => x.Context == i.Context)];
        ScatterTable t;
        if (i.Uses == 0)
        {
            // After its use ended an import may refuse to map (it may be evicted at any time); if it maps, the
            // addresses must be good, so it must not evict itself.
            try
            {
                t = i.Imported.Map(dir);
            }
            catch (InvalidOperationException)
            {
                Line($"// {i.Var}.Map(DmaDirection.{dir}) throws InvalidOperationException (its use has ended)");
                return;
            }

            Line($"var {v} = {i.Var}.Map(DmaDirection.{dir}); // its use has ended");
        }
        else
        {
            Line($"var {v} = {i.Var}.Map(DmaDirection.{dir});");
            t = i.Imported.Map(dir);
        }

        Expect(!i.Imported.IsReleased, $"Map of {i.Var} released {i.Var} itself: the addresses it returned are unmapped");
        Expect(t.TotalLength == (ulong)i.Buffer.Size, $"{v} covers {t.TotalLength} bytes of a {i.Buffer.Size}-byte buffer");
        if (_violation is not null)
        {
            return;
        }

        if (i.Context.Context.Mode == ImportMappingMode.PerAttachment)
        {
            if (i.MappedDirection is { } had && (had == dir || had == DmaDirection.Bidirectional))
            {
                Expect(ReferenceEquals(t, i.Tables[^1].Table), $"a repeated Map of {i.Var} did not return the cached addresses");
            }
            else
            {
                foreach (MMapping old in i.Tables)
                {
                    Invalidate(old);
                }

                i.Tables.Clear();
                DmaDirection mapped = i.MappedDirection is null ? dir : DmaDirection.Bidirectional;
                i.MappedDirection = mapped;
                var m = new MMapping(i.Context.Device, t, mapped, i.Buffer, v);
                i.Tables.Add(m);
                _mappings.Add(m);
            }
        }
        else
        {
            (MBuffer, IDmaAddressSpace) key = (i.Buffer, i.Context.Device.AddressSpace);
            if (_domainMappings.TryGetValue(key, out MMapping? shared))
            {
                Expect(ReferenceEquals(t, shared.Table), $"Map of {i.Var} did not return its address space's shared mapping");
            }
            else
            {
                shared = new MMapping(i.Context.Device, t, DmaDirection.Bidirectional, i.Buffer, v);
                _domainMappings[key] = shared;
            }

            i.MappedDirection = DmaDirection.Bidirectional;
            if (!i.Tables.Exists(x => x.Shared == shared))
            {
                // The import's own view of the shared mapping: usable while the import lives.
                var mine = new MMapping(i.Context.Device, t, DmaDirection.Bidirectional, i.Buffer, v) { Shared = shared };
                i.Tables.Add(mine);
                _mappings.Add(mine);
            }
        }

        ObserveEvictions(i.Context, before, i);
    }

    private void EndUse(ModelOp op)
    {
        if (PickFrom(_imports, op.A) is not { } i)
        {
            return;
        }

        if (i.Uses == 0)
        {
            Line($"// {i.Var}.Dispose() throws InvalidOperationException (no use to end)");
            ExpectThrows<InvalidOperationException>(i.Imported.Dispose, $"ending a use of {i.Var} that has none");
            return;
        }

        Line($"{i.Var}.Dispose(); // ends one use");
        HashSet<MImport> before = [.. _imports.Where(x => x.Context == i.Context)];
        i.Imported.Dispose();
        i.Uses--;
        ObserveEvictions(i.Context, before, null);
    }

    /// <summary>
    /// The model does not predict which imports a budget evicts (least recently used is a policy, not a promise), only
    /// what an eviction may take: an import of this context that is not in use, never the one being mapped.
    /// </summary>
    private void ObserveEvictions(MContext c, HashSet<MImport> before, MImport? mapping)
    {
        foreach (MImport x in before)
        {
            if (!x.Imported.IsReleased)
            {
                continue;
            }

            Expect(x != mapping, $"{x.Var} was evicted by its own Map");
            Expect(x.Uses == 0, $"{x.Var} was evicted while in use ({x.Uses} uses)");
            c.ModelEvictions++;
            Line($"// {x.Var} evicted");
            DropImport(x);
        }

        Expect(c.Context.Evictions == c.ModelEvictions, $"{c.Var}.Evictions is {c.Context.Evictions}, {c.ModelEvictions} imports were evicted");
        long charged = ChargedBytes(c);
        if (charged > c.Context.BudgetBytes)
        {
            MImport? idle = _imports.Find(x => x.Context == c && x.Uses == 0 && x != mapping && x.MappedDirection is not null);
            Expect(idle is null, $"{c.Var} holds {charged} bytes over its budget of {c.Context.BudgetBytes} but keeps the unused {idle?.Var}");
        }
    }

    // ---- moves ----

    private void Move(ModelOp op)
    {
        List<MHandle> movable = _handles.FindAll(h => h.Buffer.Heap == _soc.DeviceLocalHeap);
        if (PickFrom(movable, op.A) is not { } h)
        {
            return;
        }

        bool compact = Pick(op.B, 2) == 1;
        MBuffer b = h.Buffer;
        string call = $"soc.DeviceLocalHeap.{(compact ? "Compact" : "Evict")}({h.Var})";
        bool pinned = _attachments.Any(a => a.Buffer == b && (a.Pins > 0 || a.Maps.Count > 0));
        long pagesBefore = _soc.Memory.AllocatedPages;
        if (pinned)
        {
            Line($"// {call} throws InvalidOperationException (pinned)");
            ExpectThrows<InvalidOperationException>(() => Relocate(h.Handle, compact), $"moving the pinned {b.Var}");
            Expect(_soc.Memory.AllocatedPages == pagesBefore, "a refused move changed the allocated pages");
            return;
        }

        try
        {
            Releasing(() => Relocate(h.Handle, compact));
        }
        catch (OutOfMemoryException)
        {
            // Rule 11: a failed move leaves buffer, entries and mappings as they were; the checks after this step and
            // any later DMA through the old mappings see whether it did.
            Line($"// {call} throws OutOfMemoryException");
            Expect(_soc.Memory.AllocatedPages == pagesBefore, $"a failed move kept {_soc.Memory.AllocatedPages - pagesBefore} pages");
            return;
        }

        Line($"{call};");
        b.Moves++;
        foreach (MEntry e in _entries.Where(e => e.Buffer == b && e.Placed).ToList())
        {
            ExpectRelease(e, MetadataReleaseReason.Invalidated);
        }

        foreach (MCached c in _cached.Where(c => c.Buffer == b).ToList())
        {
            DropCached(c);
        }

        foreach (MImport i in _imports.Where(i => i.Buffer == b).ToList())
        {
            DropImport(i);
        }

        DropDomainMappings(b);
    }

    private void Relocate(DmaBufHandle handle, bool compact)
    {
        if (compact)
        {
            _soc.DeviceLocalHeap.Compact(handle);
        }
        else
        {
            _soc.DeviceLocalHeap.Evict(handle);
        }
    }

    // ---- data ----

    private void DmaWrite(ModelOp op)
    {
        List<MMapping> writable = _mappings.FindAll(m => m.Direction != DmaDirection.ToDevice);
        if (PickFrom(writable, op.A) is not { } m)
        {
            return;
        }

        (int offset, int length) = Range(m.Buffer, op.B, op.C);
        byte[] data = Pattern(op.D, length);
        Line($"{DeviceCode(m.Device)}.DmaWrite({m.Var}, {offset}, ModelWorkload.Pattern({op.D}, {length}));");
        bool ok = m.Device.DmaWrite(m.Table, offset, data);
        Expect(ok, $"DMA write through {m.Var} faulted");
        m.Buffer.Write(offset, data);
        m.Buffer.CpuCoherent = false;
    }

    private void DmaRead(ModelOp op)
    {
        if (PickFrom(_mappings, op.A) is not { } m)
        {
            return;
        }

        (int offset, int length) = Range(m.Buffer, op.B, op.C);
        Line($"{DeviceCode(m.Device)}.DmaRead({m.Var}, {offset}, new byte[{length}]);");
        byte[] got = new byte[length];
        bool ok = m.Device.DmaRead(m.Table, offset, got);
        Expect(ok, $"DMA read through {m.Var} faulted");
        ExpectBytes(m.Buffer, offset, got, $"DMA read of {m.Buffer.Var} through {m.Var}");
    }

    private void CpuWrite(ModelOp op)
    {
        if (PickFrom(_handles, op.A) is not { } h)
        {
            return;
        }

        (int offset, int length) = Range(h.Buffer, op.B, op.C);
        byte[] data = Pattern(op.D, length);
        Line($"{h.Var}.BeginCpuAccess(CpuAccess.Write); using (var view = {h.Var}.Vmap()) view.Write({offset}, ModelWorkload.Pattern({op.D}, {length})); {h.Var}.EndCpuAccess(CpuAccess.Write);");
        h.Handle.BeginCpuAccess(CpuAccess.Write);
        using (IDmaBufCpuView view = h.Handle.Vmap())
        {
            view.Write(offset, data);
        }

        h.Handle.EndCpuAccess(CpuAccess.Write);
        h.Buffer.Write(offset, data);
        h.Buffer.CpuCoherent = true;
    }

    private void CpuRead(ModelOp op)
    {
        if (PickFrom(_handles, op.A) is not { } h)
        {
            return;
        }

        (int offset, int length) = Range(h.Buffer, op.B, op.C);
        bool bracket = (op.D & 1) == 0 || !h.Buffer.CpuCoherent;
        byte[] got = new byte[length];
        if (bracket)
        {
            Line($"{h.Var}.BeginCpuAccess(CpuAccess.Read); using (var view = {h.Var}.Vmap()) view.Read({offset}, new byte[{length}]); {h.Var}.EndCpuAccess(CpuAccess.Read);");
            h.Handle.BeginCpuAccess(CpuAccess.Read);
        }
        else
        {
            // No device wrote since the last bracket: the CPU may read without one, and must see its buffer's bytes,
            // never a cache line another owner of the same pages left behind (rule 12).
            Line($"using (var view = {h.Var}.Vmap()) view.Read({offset}, new byte[{length}]); // no device wrote since the last CPU access");
        }

        using (IDmaBufCpuView view = h.Handle.Vmap())
        {
            view.Read(offset, got);
        }

        if (bracket)
        {
            h.Handle.EndCpuAccess(CpuAccess.Read);
            h.Buffer.CpuCoherent = true;
        }

        ExpectBytes(h.Buffer, offset, got, $"CPU read of {h.Buffer.Var}");
    }

    // ---- model bookkeeping ----

    /// <summary>
    /// Runs a call that may release metadata values; the exceptions of throwing release callbacks it reports (alone or
    /// in an <see cref="AggregateException"/>) are collected for the step's check, anything else propagates.
    /// </summary>
    private void Releasing(Action call)
    {
        try
        {
            call();
        }
        catch (Exception e) when (CallbackFailures(e) is { } names)
        {
            _thrown.AddRange(names);
        }
    }

    private static List<string>? CallbackFailures(Exception e)
    {
        IEnumerable<Exception> all = e is AggregateException a ? a.Flatten().InnerExceptions : [e];
        List<string> names = [];
        foreach (Exception x in all)
        {
            if (x is not CallbackFailure f)
            {
                return null;
            }

            names.Add(f.Value);
        }

        return names;
    }

    private void ExpectRelease(MEntry e, MetadataReleaseReason reason)
    {
        _entries.Remove(e);
        e.Tag.Expected = reason;
    }

    private void DropCached(MCached c)
    {
        _cached.Remove(c);
        c.Released = true;
        Invalidate(c.Table);
    }

    private void DropImport(MImport i)
    {
        _imports.Remove(i);
        i.Released = true;
        foreach (MMapping m in i.Tables)
        {
            Invalidate(m);
        }
    }

    private void DropDomainMappings(MBuffer b)
    {
        foreach ((MBuffer, IDmaAddressSpace) key in _domainMappings.Keys.Where(k => k.Item1 == b).ToList())
        {
            _domainMappings.Remove(key);
        }

        foreach (MMapping m in _mappings.Where(m => m.Shared is not null && m.Buffer == b).ToList())
        {
            Invalidate(m);
        }
    }

    private void Invalidate(MMapping m) => _mappings.Remove(m);

    private MEntry? FindEntry(MBuffer b, bool placed, MOwner owner) =>
        _entries.Find(e => e.Buffer == b && e.Placed == placed && e.Owner == owner);

    private long ChargedBytes(MContext c) => c.Context.Mode == ImportMappingMode.PerAddressSpace
        ? 0 // its imports map nothing themselves: the shared cache holds the bytes
        : _imports.Where(i => i.Context == c && i.MappedDirection is not null).Sum(i => i.Buffer.Size);

    private MOwner NewOwner()
    {
        string v = Var("o");
        Line($"var {v} = new MetadataOwner(\"{v}\");");
        return new MOwner(new MetadataOwner(v), v);
    }

    private string DeviceCode(SimDevice device) => $"soc.Devices[{IndexOfDevice(device)}]";

    private int IndexOfDevice(SimDevice device)
    {
        for (int i = 0; i < _soc.Devices.Count; i++)
        {
            if (ReferenceEquals(_soc.Devices[i], device))
            {
                return i;
            }
        }

        return -1;
    }

    private static (int Offset, int Length) Range(MBuffer b, int offsetSeed, int lengthClass)
    {
        int size = (int)b.Size;
        int length = Math.Min(s_lengths[Pick(lengthClass, s_lengths.Length)], size);
        int offset = (int)((uint)offsetSeed * 2654435761u % (uint)(size - length + 1));
        return (offset, length);
    }

    /// <summary>The bytes a step writes: a pattern any reproduction can recompute.</summary>
    public static byte[] Pattern(int seed, int length)
    {
        byte[] data = new byte[length];
        uint x = (uint)seed * 0x9E3779B9u + 1;
        for (int i = 0; i < length; i++)
        {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            data[i] = (byte)(x | 1); // never 0, so a lost write cannot look like fresh memory
        }

        return data;
    }

    private static int Pick(int operand, int count) => (int)((uint)operand % (uint)count);

    private static T? PickFrom<T>(List<T> list, int operand)
        where T : class => list.Count == 0 ? null : list[Pick(operand, list.Count)];

    private string Var(string prefix) => prefix + (++_nextVar).ToString(CultureInfo.InvariantCulture);

    private void Line(string code) => _code.AppendLine(code);
}

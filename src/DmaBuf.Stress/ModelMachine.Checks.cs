using DmaBuf.Simulation;

namespace DmaBuf.Stress;

// The checks made after every step, and the model's plain records. The model holds only what the public API promises;
// everything it compares against is read through the public API of the framework and the simulated SoC.
internal sealed partial class ModelMachine
{
    private readonly List<MImport> _allImports = [];
    private readonly List<MCached> _allCached = [];

    private void CheckInvariants()
    {
        // Registry: exactly the live buffers, each with the references and attachments the model counts (rule 1-3).
        IReadOnlyList<BufferInfo> listed = _soc.Registry.List();
        Expect(listed.Count == _buffers.Count, $"the registry lists {listed.Count} buffers, {_buffers.Count} are live");
        foreach (MBuffer b in _buffers)
        {
            BufferInfo? info = listed.FirstOrDefault(x => x.Id == b.Buffer.Id);
            if (info is null)
            {
                Fail($"{b.Var} is live but not in the registry");
                return;
            }

            Expect(b.Buffer.State == DmaBufState.Live, $"{b.Var} is {b.Buffer.State} while referenced");
            Expect(info.ReferenceCount == b.Handles + b.Attachments, $"{b.Var} has {info.ReferenceCount} references, the model counts {b.Handles} handles and {b.Attachments} attachments");
            int owned = _imports.Count(i => i.Buffer == b) + _cached.Count(c => c.Buffer == b) + _domainMappings.Keys.Count(k => k.Item1 == b);
            int attached = b.Attachments + owned;
            Expect(info.AttachedDevices.Count == attached, $"{b.Var} has {info.AttachedDevices.Count} attachments, the model has {b.Attachments} of importers and {owned} made on the buffer's behalf");
        }

        foreach (SimHeap heap in Heaps)
        {
            Expect(heap.Releases == _expectedReleases[heap], $"{heap.Name} heap ran Release {heap.Releases} times, {_expectedReleases[heap]} buffers were released");
            long live = _buffers.Count(b => b.Heap == heap);
            Expect(heap.LiveBuffers == live, $"{heap.Name} heap has {heap.LiveBuffers} live buffers, the model {live}");
        }

        // Memory: no page leaked, none freed while reachable, no device or CPU touch of freed memory (rules 8, 12).
        long pages = _buffers.Sum(b => b.Size / PhysicalMemory.PageSize);
        Expect(_soc.Memory.AllocatedPages == pages, $"{_soc.Memory.AllocatedPages} pages allocated, live buffers hold {pages}");
        Expect(_soc.Memory.FreePendingPages == 0, $"{_soc.Memory.FreePendingPages} freed pages are still reachable by a device");
        Expect(_soc.Stats.FreedPageAccesses == 0, $"{_soc.Stats.FreedPageAccesses} accesses to freed pages");
        Expect(_soc.Stats.DmaFaults == 0, $"{_soc.Stats.DmaFaults} DMA faults");

        // Callbacks: each value released exactly once, for the reason the model expects (rule 4).
        foreach (Tag t in _tags)
        {
            if (t.Expected is null)
            {
                Expect(t.Releases == 0, $"{t.Name} was released ({t.Reason}) while the model still has it");
            }
            else
            {
                Expect(t.Releases == 1 && t.Reason == t.Expected, $"{t.Name} was released {t.Releases} times{(t.Reason is { } r ? $" (last: {r})" : "")}, expected once for {t.Expected}");
            }
        }

        // Every value and cached mapping the model has is still reachable on its buffer (a failed move keeps them).
        foreach (MEntry e in _entries)
        {
            bool found = e.Buffer.Buffer.Metadata.TryGet(e.Placed ? _placed : _unplaced, e.Owner.Owner, out Tag? value);
            Expect(found && ReferenceEquals(value, e.Tag), $"{e.Tag.Name} is gone from {e.Buffer.Var} without a release");
        }

        foreach (MCached c in _cached)
        {
            bool found = c.Buffer.Buffer.Metadata.TryGet(_mapKey, c.Owner.Owner, out CachedMapping? value);
            Expect(found && ReferenceEquals(value, c.Mapping), $"{c.Table.Var} is gone from {c.Buffer.Var} without a release");
        }

        foreach (MCached c in _allCached)
        {
            Expect(c.Mapping.IsReleased == c.Released, $"{c.Table.Var} is {(c.Mapping.IsReleased ? "released" : "live")}, the model has it {(c.Released ? "released" : "live")}");
        }

        foreach (MImport i in _allImports)
        {
            Expect(i.Imported.IsReleased == i.Released, $"{i.Var} is {(i.Imported.IsReleased ? "released" : "live")}, the model has it {(i.Released ? "released" : "live")}");
            Expect(i.Released || i.Imported.Uses == i.Uses, $"{i.Var} has {i.Imported.Uses} uses, the model {i.Uses}");
        }

        // Import caches: each import's mapping charged once; listed imports are the live ones.
        foreach (MContext c in _contexts)
        {
            long charged = ChargedBytes(c);
            Expect(c.Context.CachedBytes == charged, $"{c.Var}.CachedBytes is {c.Context.CachedBytes}, its live mapped imports hold {charged} bytes");
            int live = _imports.Count(i => i.Context == c);
            Expect(c.Context.Count == live, $"{c.Var}.Count is {c.Context.Count}, {live} imports are live");
        }

        foreach (MShared s in _sharedCaches.Values)
        {
            List<MBuffer> mapped = [.. _domainMappings.Keys.Where(k => ReferenceEquals(k.Item2, s.Cache.AddressSpace)).Select(k => k.Item1)];
            long bytes = mapped.Sum(b => b.Size);
            Expect(s.Cache.CachedBytes == bytes, $"{s.Var}.CachedBytes is {s.Cache.CachedBytes}, its {mapped.Count} shared mappings hold {bytes} bytes");
            Expect(s.Cache.Count == mapped.Count, $"{s.Var}.Count is {s.Cache.Count}, {mapped.Count} shared mappings are live");
        }

        foreach (MOwner o in _owners)
        {
            int entries = _entries.Count(e => e.Owner == o) + _cached.Count(c => c.Owner == o);
            Expect(o.Owner.EntryCount == entries, $"{o.Var} has {o.Owner.EntryCount} entries, the model {entries}");
        }
    }

    private void CheckFinal()
    {
        Expect(_soc.Registry.Count == 0, $"{_soc.Registry.Count} buffers left in the registry after teardown");
        Expect(_soc.Memory.AllocatedPages == 0, $"{_soc.Memory.AllocatedPages} pages leaked after teardown");
        foreach (Tag t in _tags)
        {
            Expect(t.Releases == 1, $"{t.Name} was released {t.Releases} times by the end");
        }

        if (_violation is not null)
        {
            Line($"// violation at the end: {_violation}");
        }
    }

    private void ExpectBytes(MBuffer b, int offset, byte[] got, string what)
    {
        for (int k = 0; k < got.Length; k++)
        {
            if (b.Known[offset + k] && got[k] != b.Content[offset + k])
            {
                Fail($"{what}: byte {offset + k} is 0x{got[k]:x2}, last written 0x{b.Content[offset + k]:x2}{(got[k] == PhysicalMemory.PoisonByte ? " (the free poison)" : "")}");
                return;
            }
        }
    }

    private void ExpectThrows<TException>(Action action, string what, bool allowArgumentNull = false)
        where TException : Exception
    {
        try
        {
            action();
        }
        catch (TException)
        {
            return;
        }
        catch (ArgumentNullException) when (allowArgumentNull)
        {
            return;
        }
        catch (Exception e)
        {
            Fail($"{what} threw {e.GetType().Name} ({e.Message}), expected {typeof(TException).Name}");
            return;
        }

        Fail($"{what} did not throw {typeof(TException).Name}");
    }

    private void Expect(bool condition, string violation)
    {
        if (!condition)
        {
            Fail(violation);
        }
    }

    private void Fail(string violation) => _violation ??= violation;

    /// <summary>What a throwing release callback throws.</summary>
    private sealed class CallbackFailure(string value) : Exception($"release callback of {value} failed")
    {
        public string Value { get; } = value;
    }

    /// <summary>A metadata value; counts its own release callbacks, and may throw from them.</summary>
    private sealed class Tag(string name, bool throws)
    {
        public string Name { get; } = name;

        public bool Throws { get; } = throws;

        public int Releases { get; private set; }

        public MetadataReleaseReason? Reason { get; private set; }

        public MetadataReleaseReason? Expected { get; set; }

        public void Released(MetadataReleaseReason reason)
        {
            Releases++;
            Reason = reason;
            if (Throws)
            {
                throw new CallbackFailure(Name);
            }
        }

        public override string ToString() => Name;
    }

    private sealed class MBuffer(DmaBuffer buffer, SimHeap heap, long size, string name, bool zeroed)
    {
        public DmaBuffer Buffer { get; } = buffer;

        public SimHeap Heap { get; } = heap;

        public long Size { get; } = size;

        public string Var { get; } = name;

        /// <summary>What the buffer's bytes must be: fresh memory is zeroed (rule 12), then the last write wins.</summary>
        public byte[] Content { get; } = new byte[size];

        /// <summary>Which bytes the model knows: all of them when fresh memory must be zeroed, else those written.</summary>
        public bool[] Known { get; } = Enumerable.Repeat(zeroed, (int)size).ToArray();

        public void Write(int offset, byte[] data)
        {
            data.CopyTo(Content, offset);
            Known.AsSpan(offset, data.Length).Fill(true);
        }

        public int Handles { get; set; }

        public int Attachments { get; set; }

        public bool Released { get; set; }

        /// <summary>No device wrote since the last bracketed CPU access, so an unbracketed CPU read must be right.</summary>
        public bool CpuCoherent { get; set; } = true;

        public int Moves { get; set; }
    }

    private sealed record MHandle(DmaBufHandle Handle, MBuffer Buffer, string Var);

    private sealed class MAttachment(DmaBufAttachment attachment, MBuffer buffer, SimDevice device, string name)
    {
        public DmaBufAttachment Attachment { get; } = attachment;

        public MBuffer Buffer { get; } = buffer;

        public SimDevice Device { get; } = device;

        public string Var { get; } = name;

        public List<MMapping> Maps { get; } = [];

        public int Pins { get; set; }
    }

    /// <summary>Device addresses the model knows to be valid: DMA through them must land in the buffer.</summary>
    private sealed class MMapping(SimDevice device, ScatterTable table, DmaDirection direction, MBuffer buffer, string name)
    {
        public SimDevice Device { get; } = device;

        public ScatterTable Table { get; } = table;

        public DmaDirection Direction { get; } = direction;

        public MBuffer Buffer { get; } = buffer;

        public string Var { get; } = name;

        /// <summary>For an import's view of a per-address-space mapping, that shared mapping.</summary>
        public MMapping? Shared { get; init; }
    }

    private sealed record MOwner(MetadataOwner Owner, string Var);

    private sealed record MShared(SharedMappingCache Cache, string Var);

    private sealed record MEntry(MBuffer Buffer, bool Placed, MOwner Owner, Tag Tag);

    private sealed class MCached
    {
        public MCached(MBuffer buffer, MOwner owner, CachedMapping mapping, MMapping table)
        {
            Buffer = buffer;
            Owner = owner;
            Mapping = mapping;
            Table = table;
        }

        public MBuffer Buffer { get; }

        public MOwner Owner { get; }

        public CachedMapping Mapping { get; }

        public MMapping Table { get; }

        public bool Released { get; set; }
    }

    private sealed class MContext(ImportContext context, SimDevice device, string name)
    {
        public ImportContext Context { get; } = context;

        public SimDevice Device { get; } = device;

        public string Var { get; } = name;

        public long ModelEvictions { get; set; }
    }

    private sealed class MImport(MContext context, MBuffer buffer, ImportedBuffer imported, string name)
    {
        public MContext Context { get; } = context;

        public MBuffer Buffer { get; } = buffer;

        public ImportedBuffer Imported { get; } = imported;

        public string Var { get; } = name;

        public int Uses { get; set; }

        public bool Released { get; set; }

        /// <summary>The direction the import's mapping has, null before its first Map.</summary>
        public DmaDirection? MappedDirection { get; set; }

        public List<MMapping> Tables { get; } = [];
    }
}

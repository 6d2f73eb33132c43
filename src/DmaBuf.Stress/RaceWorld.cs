// Ownership: a RaceWorld is one scenario's private registry, exporter and device. The scenario disposes what it made;
// Verify then checks that the exporter saw every buffer released exactly once with nothing left attached or mapped.
namespace DmaBuf.Stress;

/// <summary>A race scenario found the framework breaking a lifetime rule.</summary>
public sealed class RaceViolationException : Exception
{
    /// <summary>Creates the exception with a message.</summary>
    public RaceViolationException(string message) : base(message) { }

    /// <summary>Creates the exception with no message.</summary>
    public RaceViolationException() { }

    /// <summary>Creates the exception with a message and inner exception.</summary>
    public RaceViolationException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>
/// The exporter the race scenarios run against: thread-safe (a Monitor, which Coyote controls, unlike
/// <see cref="Lock"/>), with no memory of its own, and strict: it records every call that breaks its contract —
/// a map through a detached attachment, a release with attachments or mappings left, a placement freed while mapped.
/// </summary>
internal sealed class RaceExporter : IDmaBufExporter
{
    private const ulong Base = 0x8000_0000;
    private const ulong PlacementStride = 0x100_0000;

    private readonly object _gate = new();
    private readonly HashSet<DmaBufAttachment> _attached = [];
    private readonly List<LiveMap> _maps = [];
    private readonly List<string> _errors = [];
    private readonly Dictionary<long, int> _releases = [];

    public string Name => "race";

    public IReadOnlyList<string> Errors
    {
        get
        {
            lock (_gate)
            {
                return [.. _errors];
            }
        }
    }

    public int Attached
    {
        get
        {
            lock (_gate)
            {
                return _attached.Count;
            }
        }
    }

    public int Mapped
    {
        get
        {
            lock (_gate)
            {
                return _maps.Count;
            }
        }
    }

    public int ReleasesOf(DmaBuffer buffer)
    {
        lock (_gate)
        {
            return _releases.GetValueOrDefault(buffer.Id);
        }
    }

    public static int GenerationOf(DmaBuffer buffer) => Volatile.Read(ref ((Placement)buffer.ExporterPrivate!).Generation);

    /// <summary>Mappings still live that point at a placement the buffer has moved away from.</summary>
    public int StaleMapsOf(DmaBuffer buffer)
    {
        int current = GenerationOf(buffer);
        lock (_gate)
        {
            return _maps.Count(m => ReferenceEquals(m.Attachment.Buffer, buffer) && m.Generation != current);
        }
    }

    public void Attach(DmaBufAttachment attachment)
    {
        lock (_gate)
        {
            _attached.Add(attachment);
        }
    }

    public void Detach(DmaBufAttachment attachment)
    {
        lock (_gate)
        {
            if (!_attached.Remove(attachment))
            {
                _errors.Add($"Detach of {attachment}, which is not attached");
            }

            if (_maps.Any(m => ReferenceEquals(m.Attachment, attachment)))
            {
                _errors.Add($"Detach of {attachment} with mappings left");
            }
        }
    }

    public ScatterTable Map(DmaBufAttachment attachment, DmaDirection direction)
    {
        int generation = GenerationOf(attachment.Buffer);
        ScatterTable table = ScatterTable.Single(Base + ((ulong)generation * PlacementStride), (ulong)attachment.Buffer.Size);
        lock (_gate)
        {
            if (!_attached.Contains(attachment))
            {
                _errors.Add($"Map through {attachment}, which is not attached");
            }

            _maps.Add(new LiveMap(attachment, table, generation));
        }

        return table;
    }

    public void Unmap(DmaBufAttachment attachment, ScatterTable table, DmaDirection direction)
    {
        lock (_gate)
        {
            int i = _maps.FindIndex(m => ReferenceEquals(m.Table, table) && ReferenceEquals(m.Attachment, attachment));
            if (i < 0)
            {
                _errors.Add($"Unmap of a table {attachment} does not have mapped");
                return;
            }

            _maps.RemoveAt(i);
        }
    }

    public void Release(DmaBuffer buffer)
    {
        lock (_gate)
        {
            _releases[buffer.Id] = _releases.GetValueOrDefault(buffer.Id) + 1;
            int attached = _attached.Count(a => ReferenceEquals(a.Buffer, buffer));
            int mapped = _maps.Count(m => ReferenceEquals(m.Attachment.Buffer, buffer));
            if (attached + mapped > 0)
            {
                _errors.Add($"Release of {buffer} with {attached} attachment(s) and {mapped} mapping(s) left");
            }
        }
    }

    /// <summary>The relocation a move runs: a new placement now, the old one freed by the returned action.</summary>
    public Action Relocate(DmaBuffer buffer)
    {
        var placement = (Placement)buffer.ExporterPrivate!;
        int old = Interlocked.Increment(ref placement.Generation) - 1;
        return () =>
        {
            lock (_gate)
            {
                int stillMapped = _maps.Count(m => ReferenceEquals(m.Attachment.Buffer, buffer) && m.Generation == old);
                if (stillMapped > 0)
                {
                    _errors.Add($"{buffer}: placement {old} freed with {stillMapped} mapping(s) of it left");
                }
            }
        };
    }

    public void BeginCpuAccess(DmaBuffer buffer, CpuAccess access)
    {
    }

    public void EndCpuAccess(DmaBuffer buffer, CpuAccess access)
    {
    }

    public IDmaBufCpuView Vmap(DmaBuffer buffer) => throw new NotSupportedException("The race exporter has no CPU view.");

    public void Pin(DmaBufAttachment attachment)
    {
    }

    public void Unpin(DmaBufAttachment attachment)
    {
    }

    internal sealed class Placement
    {
        public int Generation;
    }

    private readonly record struct LiveMap(DmaBufAttachment Attachment, ScatterTable Table, int Generation);
}

/// <summary>A device and address space for races: the exporter never asks it to map, so it only needs an identity.</summary>
internal sealed class RaceDevice(string name) : IDmaDevice, IDmaAddressSpace
{
    private static long s_nextId;

    public string Name { get; } = name;

    public long Id { get; } = Interlocked.Increment(ref s_nextId);

    public IDmaAddressSpace AddressSpace => this;

    public bool IsCoherent => true;

    public ScatterTable Map(ScatterTable physical, DmaDirection direction) => physical;

    public void Unmap(ScatterTable mapped, DmaDirection direction)
    {
    }
}

/// <summary>A metadata value that counts its release callbacks and remembers the placement it was made for.</summary>
/// <remarks>
/// It also checks rule 1's order from the inside: its release callback throws if <c>exporter.Release</c> has already run
/// (the memory would be gone under the callback); the side that ran it then reports the exception.
/// </remarks>
internal sealed class RaceTag(int generation, RaceExporter exporter, DmaBuffer buffer)
{
    private int _releases;

    public int Generation { get; } = generation;

    public int Releases => Volatile.Read(ref _releases);

    public MetadataReleaseReason Reason { get; private set; }

    public void Released(MetadataReleaseReason reason)
    {
        Reason = reason;
        Interlocked.Increment(ref _releases);
        if (exporter.ReleasesOf(buffer) != 0)
        {
            throw new InvalidOperationException($"a release callback ({reason}) ran after exporter.Release freed the buffer");
        }
    }
}

/// <summary>One scenario's world: registry, exporter, device, keys, and what the sides saw.</summary>
internal sealed class RaceWorld
{
    private readonly object _gate = new();
    private readonly List<Exception> _unexpected = [];
    private readonly List<RaceTag> _tags = [];
    private readonly int _sides;
    private int _arrived;

    public RaceWorld(int sides = 2) => _sides = sides;

    private const int JitterSpins = 400;

    /// <summary>Set by <see cref="RaceRunner.RunOnThreads"/>: sides spin until all have started, to widen the window.</summary>
    internal static bool SpinToStart { get; set; }

    public BufferRegistry Registry { get; } = new("race");

    public RaceExporter Exporter { get; } = new();

    public RaceDevice Device { get; } = new("race-device");

    public MetadataKey<RaceTag> PlacedKey { get; } = new("race-placed");

    public MetadataKey<CachedMapping> MapKey { get; } = new("race-mapping");

    public DmaBufHandle Export(long size = 4096) => DmaBuffer.Export(new DmaBufExportInfo
    {
        Exporter = Exporter,
        Size = size,
        Registry = Registry,
        ExporterPrivate = new RaceExporter.Placement(),
    });

    /// <summary>An import context of <paramref name="mode"/>; domain-share gets its address space's shared mapping cache.</summary>
    public (ImportContext Context, SharedMappingCache? Shared) Context(ImportMappingMode mode)
    {
        if (mode == ImportMappingMode.PerAttachment)
        {
            return (new ImportContext(Device, mode), null);
        }

        var shared = new SharedMappingCache(Device.AddressSpace);
        return (new ImportContext(Device, shared), shared);
    }

    /// <summary>A factory for <see cref="BufferMetadata.GetOrAdd{T}"/> whose values are tracked.</summary>
    /// <remarks>
    /// The factory is work done on the buffer's behalf (rule 10): it throws if <c>exporter.Release</c> ran while it was
    /// running, which a release that does not wait for factories in flight would do.
    /// </remarks>
    public RaceTag NewTag(DmaBuffer buffer)
    {
        var tag = new RaceTag(RaceExporter.GenerationOf(buffer), Exporter, buffer);
        lock (_gate)
        {
            _tags.Add(tag);
        }

        if (Exporter.ReleasesOf(buffer) != 0)
        {
            throw new InvalidOperationException("exporter.Release freed the buffer while a metadata factory was still using it");
        }

        return tag;
    }

    /// <summary>One concurrent side: runs <paramref name="action"/> on the pool; the exceptions a loser may see are expected.</summary>
    public Task Side(Action action, params Type[] allowed) => Task.Run(() =>
    {
        Interlocked.Increment(ref _arrived);
        if (SpinToStart)
        {
            var spin = default(SpinWait);
            while (Volatile.Read(ref _arrived) < _sides)
            {
                spin.SpinOnce(sleep1Threshold: -1);
            }

            // Started together, then offset by a random few hundred nanoseconds: over many iterations the sides meet at
            // every point of each other's windows, not only at their starts.
            Thread.SpinWait(Random.Shared.Next(0, JitterSpins));
        }

        try
        {
            action();
        }
        catch (Exception e) when (e is ObjectDisposedException || allowed.Contains(e.GetType()))
        {
        }
        catch (Exception e)
        {
            lock (_gate)
            {
                _unexpected.Add(e);
            }
        }
    });

    /// <summary>Runs the sides concurrently and waits for all of them.</summary>
    // An array, not a span: Coyote 1.7 controls the array overloads of WhenAll only.
    public static Task Race(params Task[] sides) => Task.WhenAll(sides);

    /// <summary>Runs <paramref name="action"/> after the race (cleanup that must not throw either).</summary>
    public void After(Action action)
    {
        try
        {
            action();
        }
        catch (Exception e)
        {
            lock (_gate)
            {
                _unexpected.Add(e);
            }
        }
    }

    /// <summary>
    /// The checks after every scenario: nothing unexpected was thrown, each buffer was released exactly once, the
    /// exporter saw no broken call and nothing is left attached or mapped, every value made was released exactly once,
    /// and the registry is empty.
    /// </summary>
    public void Verify(params DmaBuffer[] buffers)
    {
        List<string> problems = [];
        lock (_gate)
        {
            problems.AddRange(_unexpected.Select(e => $"{e.GetType().Name}: {e.Message} ({Where(e)})"));
            problems.AddRange(_tags.Where(t => t.Releases != 1).Select(t => $"a metadata value was released {t.Releases} times"));
        }

        foreach (DmaBuffer b in buffers)
        {
            int releases = Exporter.ReleasesOf(b);
            if (releases != 1)
            {
                problems.Add($"exporter Release ran {releases} times for {b}");
            }

            if (b.State != DmaBufState.Released)
            {
                problems.Add($"{b} is {b.State} after its last reference went");
            }
        }

        problems.AddRange(Exporter.Errors);
        if (Exporter.Attached != 0)
        {
            problems.Add($"{Exporter.Attached} attachment(s) left at the exporter");
        }

        if (Exporter.Mapped != 0)
        {
            problems.Add($"{Exporter.Mapped} mapping(s) left at the exporter");
        }

        if (Registry.Count != 0)
        {
            problems.Add($"{Registry.Count} buffer(s) left in the registry");
        }

        if (problems.Count > 0)
        {
            throw new RaceViolationException(string.Join("; ", problems));
        }
    }

    // The innermost frames of where an unexpected exception came from, enough to tell one defect from another.
    private static string Where(Exception e) =>
        string.Join(" < ", (e.StackTrace ?? "").Split('\n').Take(3).Select(l => l.Trim().Split(" in ")[0]));

    /// <summary>Fails the scenario at once.</summary>
    public static void Check(bool condition, string violation)
    {
        if (!condition)
        {
            throw new RaceViolationException(violation);
        }
    }
}

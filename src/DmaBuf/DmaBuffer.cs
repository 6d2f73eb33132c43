// Ownership: a DmaBuffer is owned by its references. DmaBuffer.Export returns the first DmaBufHandle; Duplicate makes
// another; each attachment and each CPU view holds one more. When the count reaches zero the buffer releases itself
// exactly once: registry entry, then exporter.Release (which frees the memory). Nothing else may free it.
using System.Diagnostics;
using System.Text;

namespace DmaBuf;

/// <summary>Lifecycle of a <see cref="DmaBuffer"/>.</summary>
public enum DmaBufState
{
    /// <summary>Exported, referenced, usable.</summary>
    Live,

    /// <summary>The last reference went; cached state and the exporter's backing store are being released.</summary>
    Releasing,

    /// <summary>Released. Every use is an <see cref="ObjectDisposedException"/>.</summary>
    Released,
}

/// <summary>What <see cref="DmaBuffer.Export"/> needs (<c>struct dma_buf_export_info</c>).</summary>
public sealed class DmaBufExportInfo
{
    /// <summary>The exporter that owns the memory. Required.</summary>
    public required IDmaBufExporter Exporter { get; init; }

    /// <summary>Size in bytes, fixed for the buffer's life. Must be positive.</summary>
    public required long Size { get; init; }

    /// <summary>The exporter's private object for this buffer (its backing store), read back by the exporter.</summary>
    public object? ExporterPrivate { get; init; }

    /// <summary>Initial debug name; see <see cref="DmaBuffer.Name"/>.</summary>
    public string? Name { get; init; }

    /// <summary>Registry the buffer is listed in; <see cref="BufferRegistry.Default"/> when null.</summary>
    public BufferRegistry? Registry { get; init; }
}

/// <summary>
/// A shared buffer (<c>struct dma_buf</c>): fixed size, a unique <see cref="Id"/>, the exporter that owns its memory and
/// the devices attached to it.
/// </summary>
/// <remarks>
/// <para><b>Lifetime.</b> A buffer is held through counted references (<see cref="DmaBufHandle"/>, attachments, CPU
/// views). It is released exactly once, when the last reference goes (rule 1): it leaves its registry, then
/// <see cref="IDmaBufExporter.Release"/> runs, then its state is <see cref="DmaBufState.Released"/>. An attachment holds a
/// reference, so a buffer with attachments is never released (rule 2).</para>
/// <para><b>Locking.</b> One lock per buffer (<see cref="LockLevel.Buffer"/>), taken for attach, detach, map, unmap, name
/// changes and every use of the buffer's fences: it is the reservation lock of <see cref="Resv"/>. Exporter and address-space locks nest inside it; registry locks never do (rule 9). Release and every callback
/// run with no framework lock held (rule 5).</para>
/// <para><b>Identity.</b> <see cref="Id"/> is never reused within a process, like an inode number: key caches by it,
/// never by an fd number or an address (rule 6).</para>
/// </remarks>
public sealed class DmaBuffer
{
    /// <summary>Longest name in UTF-8 bytes, as the kernel's <c>DMA_BUF_NAME_LEN</c> (32, with the terminator).</summary>
    public const int MaxNameLength = 31;

    private static long s_nextId;

    private readonly List<DmaBufAttachment> _attachments = [];
    private int _refCount = 1;
    private int _releaseCount;

    // Release barrier (rule 10), all under the buffer lock: factories in flight, whether the release has released the
    // entries it found, and whether somebody has claimed its last step (exporter.Release).
    private int _creators;
    private int _entryReleases;
    private bool _entriesReleased;
    private bool _finishClaimed;
    private long _placementGeneration;
    private string? _name;
    private int _state; // DmaBufState; an int so it can be read with Volatile

    private DmaBuffer(DmaBufExportInfo info, BufferRegistry registry)
    {
        Id = Interlocked.Increment(ref s_nextId);
        Size = info.Size;
        Exporter = info.Exporter;
        ExporterPrivate = info.ExporterPrivate;
        Registry = registry;
        Resv = new ReservationObject(new OrderedLock(LockLevel.Buffer, $"buffer {Id}"));
        Metadata = new BufferMetadata(this);
        _name = info.Name;
    }

    /// <summary>Unique identity of the buffer in this process; never reused.</summary>
    public long Id { get; }

    /// <summary>Size in bytes.</summary>
    public long Size { get; }

    /// <summary>The exporter that owns the memory.</summary>
    public IDmaBufExporter Exporter { get; }

    /// <summary>Exporter name, as in <c>exp_name</c>.</summary>
    public string ExporterName => Exporter.Name;

    /// <summary>The exporter's private object given at export.</summary>
    public object? ExporterPrivate { get; }

    /// <summary>The registry that lists the buffer.</summary>
    public BufferRegistry Registry { get; }

    /// <summary>The fences that guard the buffer (<c>dma_buf-&gt;resv</c>); its lock is <see cref="Lock"/>.</summary>
    public ReservationObject Resv { get; }

    /// <summary>The buffer's lock, which is its reservation lock (<see cref="ReservationObject.Lock"/>, rule 9).</summary>
    public OrderedLock Lock => Resv.Lock;

    /// <summary>Per-buffer metadata and cached mappings; released with the buffer (rules 3 and 4).</summary>
    public BufferMetadata Metadata { get; }

    /// <summary>Current lifecycle state.</summary>
    public DmaBufState State => (DmaBufState)Volatile.Read(ref _state);

    /// <summary>Number of references: handles, attachments and CPU views.</summary>
    public int ReferenceCount => Volatile.Read(ref _refCount);

    /// <summary>
    /// Debug name (<c>DMA_BUF_SET_NAME</c>); may be changed at any time. At most <see cref="MaxNameLength"/> UTF-8 bytes
    /// and no control characters.
    /// </summary>
    /// <exception cref="ArgumentException">The name is too long or has control characters.</exception>
    /// <exception cref="ObjectDisposedException">(set) The buffer was released.</exception>
    public string? Name
    {
        get => Volatile.Read(ref _name);
        set
        {
            ValidateName(value);
            using OrderedLock.Scope scope = Lock.Enter();
            ThrowIfNotLive();
            _name = value;
        }
    }

    /// <summary>The attachments, as a snapshot taken under the buffer lock.</summary>
    public IReadOnlyList<DmaBufAttachment> Attachments
    {
        get
        {
            using OrderedLock.Scope scope = Lock.Enter();
            return [.. _attachments];
        }
    }

    /// <summary>
    /// Creates a buffer over the exporter's memory and returns its first reference (<c>dma_buf_export</c>). After this
    /// returns, the buffer owns the exporter's backing store: a failure in a later step must only dispose the handle,
    /// which runs <see cref="IDmaBufExporter.Release"/> exactly once (rule 7). If this throws, nothing was taken over.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Size is not positive.</exception>
    /// <exception cref="ArgumentException">The name is invalid.</exception>
    public static DmaBufHandle Export(DmaBufExportInfo info)
    {
        ArgumentNullException.ThrowIfNull(info);
        ArgumentNullException.ThrowIfNull(info.Exporter);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(info.Size);
        ValidateName(info.Name);

        var buffer = new DmaBuffer(info, info.Registry ?? BufferRegistry.Default);
        buffer.Registry.Add(buffer);
        DmaBufMetrics.s_exports.Add(1);
        DmaBufMetrics.s_liveBuffers.Add(1);
        return new DmaBufHandle(buffer);
    }

    /// <summary>
    /// Takes a new reference if the buffer is still live, for caches that find a buffer without holding it (an import
    /// cache keyed by identity, say): the kernel's "get unless zero". Returns null once the last reference has gone, so
    /// a lookup can never bring a releasing buffer back (rules 1 and 3).
    /// </summary>
    public DmaBufHandle? TryAddReference() => TryAddRef() ? new DmaBufHandle(this) : null;

    /// <summary>Checks a name against the rules of <see cref="Name"/>.</summary>
    /// <exception cref="ArgumentException">The name is too long or has control characters.</exception>
    public static void ValidateName(string? name)
    {
        if (name is null)
        {
            return;
        }

        if (Encoding.UTF8.GetByteCount(name) > MaxNameLength)
        {
            throw new ArgumentException(
                $"Buffer name '{name}' is {Encoding.UTF8.GetByteCount(name)} bytes; at most {MaxNameLength} UTF-8 bytes are allowed.",
                nameof(name));
        }

        foreach (char c in name)
        {
            if (char.IsControl(c))
            {
                throw new ArgumentException("Buffer names may not contain control characters.", nameof(name));
            }
        }
    }

    /// <inheritdoc/>
    public override string ToString() => $"dma-buf {Id} ({ExporterName}, {Size} bytes{(Name is { } n ? ", " + n : "")})";

    /// <summary>Adds a reference; fails once the count has reached zero (SafeHandle-style).</summary>
    internal bool TryAddRef()
    {
        int count = Volatile.Read(ref _refCount);
        while (count > 0)
        {
            int seen = Interlocked.CompareExchange(ref _refCount, count + 1, count);
            if (seen == count)
            {
                return true;
            }

            count = seen;
        }

        return false;
    }

    internal void AddRef()
    {
        if (!TryAddRef())
        {
            throw new ObjectDisposedException(ToString(), "The buffer was released.");
        }
    }

    /// <summary>Drops a reference; the last one releases the buffer. Must be called with no framework lock held.</summary>
    internal void ReleaseRef()
    {
        int count = Interlocked.Decrement(ref _refCount);
        Debug.Assert(count >= 0, "reference count went negative");
        if (count == 0)
        {
            ReleaseCore();
        }
    }

    internal void ThrowIfNotLive()
    {
        if (_state != (int)DmaBufState.Live)
        {
            throw new ObjectDisposedException(ToString(), "The buffer was released.");
        }
    }

    internal void AddAttachmentLocked(DmaBufAttachment attachment)
    {
        Debug.Assert(Lock.IsHeldByCurrentThread);
        _attachments.Add(attachment);
        AssertInvariantsLocked();
    }

    /// <summary>Removes a detached attachment; returns whether the caller must now finish the buffer's release.</summary>
    internal bool RemoveAttachmentLocked(DmaBufAttachment attachment)
    {
        Debug.Assert(Lock.IsHeldByCurrentThread);
        _attachments.Remove(attachment);
        AssertInvariantsLocked();
        return TryClaimFinishLocked();
    }

    /// <summary>Placement generation: bumped by every successful <see cref="Move"/>.</summary>
    internal long PlacementGeneration => Interlocked.Read(ref _placementGeneration);

    internal long PlacementGenerationLocked => _placementGeneration;

    /// <summary>
    /// Registers a metadata factory about to run on the buffer's behalf (rule 10); the release waits for it. Returns the
    /// placement generation the factory sees.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The buffer is being released.</exception>
    internal long BeginCreate()
    {
        using OrderedLock.Scope scope = Lock.Enter();
        ThrowIfNotLive();
        _creators++;
        return _placementGeneration;
    }

    /// <summary>Ends what <see cref="BeginCreate"/> began; the last creator out may finish a waiting release.</summary>
    internal void EndCreate()
    {
        bool finish;
        using (OrderedLock.Scope scope = Lock.Enter())
        {
            Debug.Assert(_creators > 0, "EndCreate without BeginCreate");
            _creators--;
            finish = TryClaimFinishLocked();
        }

        if (finish)
        {
            FinishRelease();
        }
    }

    /// <summary>An entry was taken off the buffer for release (any path); the release waits until it completes.</summary>
    internal void BeginEntryReleaseLocked()
    {
        Debug.Assert(Lock.IsHeldByCurrentThread);
        _entryReleases++;
    }

    /// <summary>An entry's release completed; the last one out may finish a waiting release.</summary>
    internal void EndEntryRelease()
    {
        bool finish;
        using (OrderedLock.Scope scope = Lock.Enter())
        {
            Debug.Assert(_entryReleases > 0, "EndEntryRelease without BeginEntryReleaseLocked");
            _entryReleases--;
            finish = TryClaimFinishLocked();
        }

        if (finish)
        {
            FinishRelease();
        }
    }

    private bool TryClaimFinishLocked()
    {
        if (!_entriesReleased || _finishClaimed || _creators != 0 || _entryReleases != 0 || _attachments.Count != 0)
        {
            return false;
        }

        _finishClaimed = true;
        return true;
    }

    private int CountedAttachmentsLocked()
    {
        int n = 0;
        foreach (DmaBufAttachment a in _attachments)
        {
            n += a.HoldsReference ? 1 : 0;
        }

        return n;
    }

    internal void SnapshotLocked(List<string> devices, out int mappings)
    {
        mappings = 0;
        foreach (DmaBufAttachment a in _attachments)
        {
            devices.Add(a.Device.Name);
            mappings += a.LiveMappingCountLocked;
        }
    }

    internal void MarkReleasingLocked()
    {
        Debug.Assert(Lock.IsHeldByCurrentThread);
        _state = (int)DmaBufState.Releasing;
    }

    private void ReleaseCore()
    {
        // Exactly once: the count only reaches zero once, because TryAddRef refuses to resurrect it. The counter below
        // turns a broken caller (a Dispose racing a resurrection) into a loud failure instead of a double free.
        if (Interlocked.Increment(ref _releaseCount) != 1)
        {
            throw new InvalidOperationException($"{this} released twice.");
        }

        OrderedLock.AssertNoneHeld($"Release of {this}");
        Registry.Remove(this);

        // Cached state first, newest first, while the memory is still there; then the exporter frees it. Entries another
        // path took first (an owner's teardown, an eviction), factories still running and the attachments they made
        // finish on their own threads: the last of them out runs the exporter's release (rules 1 and 10), so no
        // callback and no attachment made for a cache ever sees the memory freed under it.
        MetadataEntry[] entries;
        using (OrderedLock.Scope scope = Lock.Enter())
        {
            entries = Metadata.DetachAllLocked();
        }

        List<Exception>? errors = MetadataEntry.ReleaseAll(entries, MetadataReleaseReason.BufferReleased, out _);
        bool finish;
        using (OrderedLock.Scope scope = Lock.Enter())
        {
            _entriesReleased = true;
            finish = TryClaimFinishLocked();
        }

        if (finish)
        {
            try
            {
                FinishRelease();
            }
            catch (Exception ex)
            {
                (errors ??= []).Add(ex);
            }
        }

        if (errors is not null)
        {
            throw new AggregateException($"{this}: {errors.Count} failure(s) during release; the buffer was released regardless.", errors);
        }
    }

    /// <summary>The release's last step, run once by whoever claimed it: the exporter frees the memory.</summary>
    internal void FinishRelease()
    {
        OrderedLock.AssertNoneHeld($"Release of {this}");
        try
        {
            Exporter.Release(this);
        }
        finally
        {
            Volatile.Write(ref _state, (int)DmaBufState.Released);
            DmaBufMetrics.s_releases.Add(1);
            DmaBufMetrics.s_liveBuffers.Add(-1);
        }
    }

    /// <summary>
    /// Moves the buffer (dynamic exporters only; <c>dma_buf_move_notify</c>). All or nothing: under the buffer lock the
    /// move is refused if an attachment pins the buffer, then <paramref name="relocate"/> runs; if it throws, the buffer,
    /// its entries and mappings are exactly as they were. Once it succeeded, still under the lock, cached attachment
    /// mappings are unmapped, every placement-dependent metadata entry and every cache-owned attachment is revoked, and a
    /// factory still running for the old placement will have its value invalidated. Then, with no lock held, those
    /// entries are released (reason <see cref="MetadataReleaseReason.Invalidated"/>), every dynamic importer is notified,
    /// and only then is the old placement freed, so no device mapping can reach memory given back.
    /// </summary>
    /// <param name="relocate">The exporter's relocation; runs under the buffer lock; returns the action that frees the old placement.</param>
    /// <returns>The number of cached mappings and metadata entries invalidated.</returns>
    /// <exception cref="InvalidOperationException">An attachment pins the buffer; the message names it.</exception>
    /// <exception cref="ObjectDisposedException">The buffer was released.</exception>
    /// <exception cref="AggregateException">Release callbacks or move notifications threw; the move completed regardless.</exception>
    public int Move(Func<DmaBuffer, Action> relocate)
    {
        ArgumentNullException.ThrowIfNull(relocate);
        MetadataEntry[] entries;
        List<DmaBufAttachment> notify = [];
        List<Exception>? errors = null;
        Action freeOld;
        int invalidated = 0;
        using (OrderedLock.Scope scope = Lock.Enter())
        {
            ThrowIfNotLive();
            foreach (DmaBufAttachment a in _attachments)
            {
                if (a.IsPinnedLocked)
                {
                    throw new InvalidOperationException($"{this} cannot move: {a.Device.Name}'s attachment pins it.");
                }
            }

            // First the step that can fail for want of memory; nothing has changed if it throws.
            freeOld = relocate(this);
            _placementGeneration++;
            foreach (DmaBufAttachment a in _attachments)
            {
                try
                {
                    invalidated += a.InvalidateForMoveLocked();
                }
                catch (Exception ex)
                {
                    (errors ??= []).Add(ex);
                }

                if (a.Importer is not null)
                {
                    notify.Add(a);
                }
            }

            entries = Metadata.DetachPlacementDependentLocked();
        }

        errors = Merge(errors, MetadataEntry.ReleaseAll(entries, MetadataReleaseReason.Invalidated, out int released));
        invalidated += released;
        foreach (DmaBufAttachment a in notify)
        {
            try
            {
                a.Importer!.MoveNotify(a);
            }
            catch (Exception ex)
            {
                (errors ??= []).Add(ex);
            }
        }

        freeOld();
        DmaBufMetrics.s_invalidations.Add(invalidated);
        if (errors is not null)
        {
            throw new AggregateException($"{this} moved, but {errors.Count} callback(s) threw.", errors);
        }

        return invalidated;
    }

    private static List<Exception>? Merge(List<Exception>? a, List<Exception>? b)
    {
        if (a is null)
        {
            return b;
        }

        if (b is not null)
        {
            a.AddRange(b);
        }

        return a;
    }

    [Conditional("DEBUG")]
    internal void AssertInvariantsLocked()
    {
        Debug.Assert(Lock.IsHeldByCurrentThread, "invariants are checked under the buffer lock");
        if (_refCount < CountedAttachmentsLocked())
        {
            throw new InvalidOperationException($"{this}: {_attachments.Count} attachments but only {_refCount} references.");
        }

        if (_finishClaimed && (_attachments.Count != 0 || _creators != 0 || _entryReleases != 0))
        {
            throw new InvalidOperationException($"{this}: released with {_attachments.Count} attachments, {_creators} factories and {_entryReleases} entry releases in flight.");
        }

        foreach (DmaBufAttachment a in _attachments)
        {
            if (!ReferenceEquals(a.Buffer, this))
            {
                throw new InvalidOperationException($"{this}: attachment of another buffer in its list.");
            }
        }
    }
}

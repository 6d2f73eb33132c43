// Ownership: an entry is on its buffer's list until one path claims it under the buffer lock (buffer release, owner
// teardown, removal, a move, an eviction, or a lost race in GetOrAdd). The claimer revokes it there — framework state
// behind it (a buffer-owned attachment) can make no new mapping from then on — and runs its release exactly once,
// outside every lock. Whoever lost the claim can wait for that release to finish.
namespace DmaBuf;

/// <summary>One value on one buffer for one (key, owner). Released exactly once.</summary>
internal abstract class MetadataEntry
{
    private const int StateLive = 0;
    private const int StateReleasing = 1;
    private const int StateReleased = 2;

    private static long s_sequence;
    private readonly object _gate = new();
    private int _state;
    private int _releasingThread;
    private DmaBuffer? _claimedFrom;

    protected MetadataEntry(DmaBuffer buffer, object key, MetadataOwner owner, bool dependsOnPlacement)
    {
        Buffer = buffer;
        Key = key;
        Owner = owner;
        DependsOnPlacement = dependsOnPlacement;
        Sequence = Interlocked.Increment(ref s_sequence);
    }

    /// <summary>The buffer; cleared once released so the entry does not keep it reachable.</summary>
    public DmaBuffer? Buffer { get; private set; }

    public object Key { get; }

    public MetadataOwner Owner { get; }

    /// <summary>Whether a move invalidates the entry: its key says so, or it holds framework mapping state.</summary>
    public bool DependsOnPlacement { get; }

    public long Sequence { get; }

    /// <summary>Whether the release has begun (or finished).</summary>
    public bool IsReleased => Volatile.Read(ref _state) != StateLive;

    /// <summary>Whether the release callback has returned.</summary>
    public bool IsReleaseComplete => Volatile.Read(ref _state) == StateReleased;

    /// <summary>
    /// Called under the buffer lock by the path that takes the entry off its buffer: what the entry holds may make no
    /// new mapping from now on, so a release or a move never races a map through it.
    /// </summary>
    public abstract void RevokeLocked();

    /// <summary>
    /// Buffer lock held: the entry is taken off <paramref name="buffer"/> for release. It is revoked, and the buffer
    /// counts its release as in flight until it completes, so the buffer's own release waits for it (rules 1 and 10).
    /// </summary>
    public void ClaimLocked(DmaBuffer buffer)
    {
        System.Diagnostics.Debug.Assert(_claimedFrom is null, "an entry is taken off its buffer once");
        _claimedFrom = buffer;
        buffer.BeginEntryReleaseLocked();
        RevokeLocked();
    }

    /// <summary>
    /// Runs the release callback if nobody has yet (false if somebody did). Must be called with no framework lock held
    /// (rule 5). A throwing callback still completes the release; the exception reaches the caller.
    /// </summary>
    public bool Release(MetadataReleaseReason reason, bool forgetOwner = true)
    {
        if (Interlocked.CompareExchange(ref _state, StateReleasing, StateLive) != StateLive)
        {
            return false;
        }

        Volatile.Write(ref _releasingThread, Environment.CurrentManagedThreadId);
        OrderedLock.AssertNoneHeld($"release of metadata '{Key}'");
        try
        {
            InvokeRelease(reason);
        }
        finally
        {
            Buffer = null;
            try
            {
                // The owner forgets the entry only now: a teardown that starts meanwhile still sees it and waits for it.
                if (forgetOwner)
                {
                    Owner.Forget(this);
                }

                Owner.OnEntryReleased(this, reason);
            }
            finally
            {
                lock (_gate)
                {
                    Volatile.Write(ref _state, StateReleased);
                    Monitor.PulseAll(_gate);
                }

                // Last: this may be what lets the buffer's release finish, on this thread.
                DmaBuffer? claimedFrom = _claimedFrom;
                _claimedFrom = null;
                claimedFrom?.EndEntryRelease();
            }
        }

        return true;
    }

    /// <summary>
    /// Waits until the release another thread began has finished, so an owner's teardown returns only when every one
    /// of its entries is gone. Returns at once if the release runs on this thread (a callback tearing down its owner).
    /// </summary>
    public void WaitReleased()
    {
        if (IsReleaseComplete || Volatile.Read(ref _releasingThread) == Environment.CurrentManagedThreadId)
        {
            return;
        }

        lock (_gate)
        {
            while (Volatile.Read(ref _state) != StateReleased)
            {
                Monitor.Wait(_gate);
            }
        }
    }

    /// <summary>The stored value.</summary>
    public abstract object ValueObject { get; }

    protected abstract void InvokeRelease(MetadataReleaseReason reason);

    /// <summary>Releases <paramref name="entries"/> in order; every one runs even if some throw.</summary>
    /// <returns>The exceptions thrown, or null; <paramref name="released"/> counts entries this call released.</returns>
    public static List<Exception>? ReleaseAll(IReadOnlyList<MetadataEntry> entries, MetadataReleaseReason reason, out int released, bool forgetOwner = true)
    {
        List<Exception>? errors = null;
        released = 0;
        foreach (MetadataEntry e in entries)
        {
            try
            {
                if (e.Release(reason, forgetOwner))
                {
                    released++;
                }
            }
            catch (Exception ex)
            {
                released++;
                (errors ??= []).Add(ex);
            }
        }

        return errors;
    }
}

/// <summary>Framework state stored as metadata that maps the buffer (an import, a cached mapping).</summary>
internal interface IBufferOwnedState
{
    /// <summary>Buffer lock held: no new mapping may be made through this state from now on.</summary>
    void RevokeLocked();
}

internal sealed class MetadataEntry<T>(
    DmaBuffer buffer, MetadataKey<T> key, MetadataOwner owner, T value, Action<T, MetadataReleaseReason>? release)
    : MetadataEntry(buffer, key, owner, key.DependsOnPlacement || value is IBufferOwnedState)
    where T : class
{
    public T Value { get; } = value;

    public override object ValueObject => Value;

    public override void RevokeLocked() => (Value as IBufferOwnedState)?.RevokeLocked();

    protected override void InvokeRelease(MetadataReleaseReason reason) => release?.Invoke(Value, reason);
}

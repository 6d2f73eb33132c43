namespace DmaBuf;

/// <summary>One value on one buffer for one (key, owner). Released exactly once.</summary>
internal abstract class MetadataEntry
{
    private static long s_sequence;
    private int _released;

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

    public bool DependsOnPlacement { get; }

    public long Sequence { get; }

    public bool IsReleased => Volatile.Read(ref _released) != 0;

    /// <summary>Runs the release callback if nobody has yet. Must be called with no framework lock held (rule 5).</summary>
    public bool Release(MetadataReleaseReason reason, bool forgetOwner = true)
    {
        if (Interlocked.Exchange(ref _released, 1) != 0)
        {
            return false;
        }

        OrderedLock.AssertNoneHeld($"release of metadata '{Key}'");
        if (forgetOwner)
        {
            Owner.Forget(this);
        }

        try
        {
            InvokeRelease(reason);
        }
        finally
        {
            Buffer = null;
            Owner.OnEntryReleased(this, reason);
        }

        return true;
    }

    protected abstract void InvokeRelease(MetadataReleaseReason reason);
}

internal sealed class MetadataEntry<T>(
    DmaBuffer buffer, MetadataKey<T> key, MetadataOwner owner, T value, Action<T, MetadataReleaseReason>? release)
    : MetadataEntry(buffer, key, owner, key.DependsOnPlacement)
    where T : class
{
    public T Value { get; } = value;

    protected override void InvokeRelease(MetadataReleaseReason reason) => release?.Invoke(Value, reason);
}

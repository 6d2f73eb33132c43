using System.Diagnostics.CodeAnalysis;

namespace DmaBuf;

/// <summary>
/// Per-buffer metadata (the 2014 patch, done right): values stored on a buffer under a typed key for an owner, each with
/// a release callback that runs exactly once, on the first of buffer release, owner teardown, explicit removal,
/// invalidation because the buffer moved, or eviction.
/// </summary>
/// <remarks>
/// <para>An entry never keeps its buffer alive: it holds no reference, and the buffer's release releases it (newest
/// first) before the exporter frees the memory (rules 1, 3, 4).</para>
/// <para>Entries live under the buffer lock; factories and release callbacks run with no framework lock held (rule 5).</para>
/// </remarks>
public sealed class BufferMetadata
{
    private readonly DmaBuffer _buffer;
    private readonly List<MetadataEntry> _entries = [];

    internal BufferMetadata(DmaBuffer buffer) => _buffer = buffer;

    /// <summary>Number of entries.</summary>
    public int Count
    {
        get
        {
            using OrderedLock.Scope scope = _buffer.Lock.Enter();
            return _entries.Count;
        }
    }

    /// <summary>Looks up the value stored under (<paramref name="key"/>, <paramref name="owner"/>).</summary>
    public bool TryGet<T>(MetadataKey<T> key, MetadataOwner owner, [MaybeNullWhen(false)] out T value)
        where T : class
    {
        using OrderedLock.Scope scope = _buffer.Lock.Enter();
        MetadataEntry? e = FindLocked(key, owner);
        value = (e as MetadataEntry<T>)?.Value;
        return value is not null;
    }

    /// <summary>
    /// Returns the value under (<paramref name="key"/>, <paramref name="owner"/>), creating it with
    /// <paramref name="create"/> if there is none. <paramref name="create"/> runs outside every lock; if another thread
    /// stored a value meanwhile, the new one is released at once (reason <see cref="MetadataReleaseReason.Removed"/>)
    /// and the stored one returned.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The buffer was released, or the owner torn down.</exception>
    public T GetOrAdd<T>(MetadataKey<T> key, MetadataOwner owner, Func<DmaBuffer, T> create, Action<T, MetadataReleaseReason>? release = null)
        where T : class
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(owner);
        ArgumentNullException.ThrowIfNull(create);
        if (TryGet(key, owner, out T? existing))
        {
            return existing;
        }

        T value = create(_buffer);
        var entry = new MetadataEntry<T>(_buffer, key, owner, value, release);
        T? winner = null;
        bool added = false;
        using (OrderedLock.Scope scope = _buffer.Lock.Enter())
        {
            if (FindLocked(key, owner) is MetadataEntry<T> other)
            {
                winner = other.Value;
            }
            else if (_buffer.State == DmaBufState.Live && owner.TryAdd(entry))
            {
                _entries.Add(entry);
                added = true;
            }
        }

        if (added)
        {
            return value;
        }

        // Lost a race, or the buffer or owner is going away: give the new value back at once.
        entry.Release(MetadataReleaseReason.Removed, forgetOwner: false);
        if (winner is not null)
        {
            return winner;
        }

        ObjectDisposedException.ThrowIf(owner.IsDisposed, owner);
        throw new ObjectDisposedException(_buffer.ToString(), "The buffer was released.");
    }

    /// <summary>Removes and releases the value under (<paramref name="key"/>, <paramref name="owner"/>).</summary>
    /// <returns>Whether there was one.</returns>
    public bool Remove<T>(MetadataKey<T> key, MetadataOwner owner)
        where T : class => Remove(key, owner, MetadataReleaseReason.Removed);

    internal bool Remove(object key, MetadataOwner owner, MetadataReleaseReason reason)
    {
        MetadataEntry? e;
        using (OrderedLock.Scope scope = _buffer.Lock.Enter())
        {
            e = FindLocked(key, owner);
            if (e is null)
            {
                return false;
            }

            _entries.Remove(e);
        }

        return e.Release(reason);
    }

    /// <summary>Removes <paramref name="entry"/> from the buffer without releasing it (the caller does).</summary>
    internal void Detach(MetadataEntry entry)
    {
        using OrderedLock.Scope scope = _buffer.Lock.Enter();
        _entries.Remove(entry);
    }

    /// <summary>Takes every entry off the buffer, newest first, for release (buffer release). Buffer lock held.</summary>
    internal MetadataEntry[] DetachAllLocked()
    {
        MetadataEntry[] all = [.. _entries];
        _entries.Clear();
        Array.Reverse(all);
        return all;
    }

    /// <summary>Takes the placement-dependent entries off the buffer, newest first (buffer moved). Buffer lock held.</summary>
    internal MetadataEntry[] DetachPlacementDependentLocked()
    {
        var moved = new List<MetadataEntry>();
        for (int i = _entries.Count - 1; i >= 0; i--)
        {
            if (_entries[i].DependsOnPlacement)
            {
                moved.Add(_entries[i]);
                _entries.RemoveAt(i);
            }
        }

        return [.. moved];
    }

    private MetadataEntry? FindLocked(object key, MetadataOwner owner)
    {
        // A handful of entries per buffer: a scan beats a dictionary and allocates nothing.
        for (int i = 0; i < _entries.Count; i++)
        {
            MetadataEntry e = _entries[i];
            if (ReferenceEquals(e.Key, key) && ReferenceEquals(e.Owner, owner))
            {
                return e;
            }
        }

        return null;
    }
}

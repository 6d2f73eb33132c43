using System.Diagnostics;
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
/// <para><b>Creation is published before it starts</b> (rule 10). <see cref="GetOrAdd{T}(MetadataKey{T}, MetadataOwner, Func{DmaBuffer, T}, Action{T, MetadataReleaseReason})"/> registers itself with the
/// buffer under the buffer lock before its factory runs; a release that begins meanwhile releases every stored entry and
/// then leaves its last step (<see cref="IDmaBufExporter.Release"/>) to the last creator or buffer-owned attachment to
/// finish, so it never meets a half-made entry and never frees memory a factory is still mapping. A value made for a
/// buffer that was released or moved meanwhile is released at once and never stored; after a move the factory runs
/// again for the new placement.</para>
/// <para><b>Callbacks.</b> A throwing release callback does not stop the others, the release of the buffer, or the
/// owner's teardown: all run, then one <see cref="AggregateException"/> reports them (rule 11).</para>
/// </remarks>
public sealed class BufferMetadata
{
    // A factory that keeps meeting moves gives up rather than spin: a buffer moved this often has no stable mapping.
    private const int MaxCreateAttempts = 16;

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

    /// <summary>Looks up a cached item and begins a use of it under the buffer lock, so no eviction can take it meanwhile.</summary>
    internal bool TryUse<T>(MetadataKey<T> key, MetadataOwner owner, [MaybeNullWhen(false)] out T value)
        where T : class, ICachedItem
    {
        using OrderedLock.Scope scope = _buffer.Lock.Enter();
        if (FindLocked(key, owner) is MetadataEntry<T> e && e.Value.Slot.TryBeginUseLocked())
        {
            value = e.Value;
            return true;
        }

        value = null;
        return false;
    }

    /// <summary>
    /// Returns the value under (<paramref name="key"/>, <paramref name="owner"/>), creating it with
    /// <paramref name="create"/> if there is none. <paramref name="create"/> runs outside every lock, while the buffer
    /// knows a creation is in flight (its release waits for it). If another thread stored a value meanwhile, the new one
    /// is released at once (reason <see cref="MetadataReleaseReason.Removed"/>) and the stored one returned; if the
    /// buffer moved meanwhile and the key depends on placement, the new one is released (reason
    /// <see cref="MetadataReleaseReason.Invalidated"/>) and <paramref name="create"/> runs again.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The buffer was released, or the owner torn down.</exception>
    /// <exception cref="InvalidOperationException">The buffer moved during every one of 16 attempts.</exception>
    public T GetOrAdd<T>(MetadataKey<T> key, MetadataOwner owner, Func<DmaBuffer, T> create, Action<T, MetadataReleaseReason>? release = null)
        where T : class => GetOrAdd(key, owner, create, release, out _);

    internal T GetOrAdd<T>(
        MetadataKey<T> key, MetadataOwner owner, Func<DmaBuffer, T> create, Action<T, MetadataReleaseReason>? release, out bool added)
        where T : class
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(owner);
        ArgumentNullException.ThrowIfNull(create);
        for (int attempt = 1; ; attempt++)
        {
            if (TryGet(key, owner, out T? existing))
            {
                added = false;
                return existing;
            }

            ObjectDisposedException.ThrowIf(owner.IsDisposed, owner);
            long generation = _buffer.BeginCreate();
            CreateOutcome outcome;
            T? winner = null;
            T value;
            try
            {
                try
                {
                    value = create(_buffer);
                }
                catch when (attempt < MaxCreateAttempts && _buffer.PlacementGeneration != generation)
                {
                    // The buffer moved under the factory (its attachment was revoked): make it again for the new place.
                    continue;
                }

                var entry = new MetadataEntry<T>(_buffer, key, owner, value, release);
                using (OrderedLock.Scope scope = _buffer.Lock.Enter())
                {
                    if (FindLocked(key, owner) is MetadataEntry<T> other)
                    {
                        winner = other.Value;
                        outcome = CreateOutcome.Lost;
                    }
                    else if (_buffer.State != DmaBufState.Live)
                    {
                        outcome = CreateOutcome.BufferGone;
                    }
                    else if (entry.DependsOnPlacement && _buffer.PlacementGenerationLocked != generation)
                    {
                        outcome = CreateOutcome.Moved;
                    }
                    else if (!owner.TryAdd(entry))
                    {
                        outcome = CreateOutcome.OwnerGone;
                    }
                    else
                    {
                        _entries.Add(entry);
                        AssertInvariantsLocked();
                        outcome = CreateOutcome.Stored;
                    }

                    if (outcome != CreateOutcome.Stored)
                    {
                        entry.RevokeLocked();
                    }
                }

                if (outcome != CreateOutcome.Stored)
                {
                    // Give the new value back at once; it was never visible to anyone.
                    entry.Release(outcome == CreateOutcome.Moved ? MetadataReleaseReason.Invalidated : MetadataReleaseReason.Removed, forgetOwner: false);
                }
            }
            finally
            {
                // After the value was stored or given back: this may be what lets a concurrent release finish.
                _buffer.EndCreate();
            }

            switch (outcome)
            {
                case CreateOutcome.Stored:
                    added = true;
                    return value;
                case CreateOutcome.Lost:
                    added = false;
                    return winner!;
                case CreateOutcome.Moved when attempt < MaxCreateAttempts:
                    continue;
                case CreateOutcome.Moved:
                    throw new InvalidOperationException($"{_buffer} moved during each of {MaxCreateAttempts} attempts to create '{key}'.");
                case CreateOutcome.OwnerGone:
                    throw new ObjectDisposedException(owner.ToString(), $"The metadata owner '{owner}' was torn down.");
                default:
                    throw new ObjectDisposedException(_buffer.ToString(), "The buffer was released.");
            }
        }
    }

    /// <summary>Removes and releases the value under (<paramref name="key"/>, <paramref name="owner"/>).</summary>
    /// <returns>Whether there was one.</returns>
    /// <exception cref="AggregateException">The release callback threw (the entry is removed regardless).</exception>
    public bool Remove<T>(MetadataKey<T> key, MetadataOwner owner)
        where T : class => Remove(key, owner, MetadataReleaseReason.Removed, claim: null);

    /// <summary>
    /// Takes the entry under (<paramref name="key"/>, <paramref name="owner"/>) off the buffer if
    /// <paramref name="claim"/> (run under the buffer lock) agrees, and releases it.
    /// </summary>
    internal bool Remove(object key, MetadataOwner owner, MetadataReleaseReason reason, Func<MetadataEntry, bool>? claim)
    {
        MetadataEntry? e;
        using (OrderedLock.Scope scope = _buffer.Lock.Enter())
        {
            e = FindLocked(key, owner);
            if (e is null || (claim is not null && !claim(e)))
            {
                return false;
            }

            _entries.Remove(e);
            e.ClaimLocked(_buffer);
            AssertInvariantsLocked();
        }

        List<Exception>? errors = MetadataEntry.ReleaseAll([e], reason, out int released);
        if (errors is not null)
        {
            throw new AggregateException($"The release callback of '{key}' on {_buffer} threw.", errors);
        }

        return released > 0;
    }

    /// <summary>
    /// Takes <paramref name="entry"/> off the buffer without releasing it (the caller does, having claimed it).
    /// Returns false if another path already took it, and so releases it.
    /// </summary>
    internal bool Detach(MetadataEntry entry)
    {
        using OrderedLock.Scope scope = _buffer.Lock.Enter();
        if (!_entries.Remove(entry))
        {
            return false;
        }

        entry.ClaimLocked(_buffer);
        AssertInvariantsLocked();
        return true;
    }

    /// <summary>Takes every entry off the buffer, newest first, for release (buffer release). Buffer lock held.</summary>
    internal MetadataEntry[] DetachAllLocked()
    {
        MetadataEntry[] all = [.. _entries];
        _entries.Clear();
        Array.Reverse(all);
        foreach (MetadataEntry e in all)
        {
            e.ClaimLocked(_buffer);
        }

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
                _entries[i].ClaimLocked(_buffer);
                _entries.RemoveAt(i);
            }
        }

        AssertInvariantsLocked();
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

    [Conditional("DEBUG")]
    private void AssertInvariantsLocked()
    {
        Debug.Assert(_buffer.Lock.IsHeldByCurrentThread, "metadata invariants are checked under the buffer lock");
        for (int i = 0; i < _entries.Count; i++)
        {
            MetadataEntry e = _entries[i];
            if (e.IsReleased || !ReferenceEquals(e.Buffer, _buffer))
            {
                throw new InvalidOperationException($"{_buffer}: metadata '{e.Key}' of {e.Owner} is on the list but released or of another buffer.");
            }

            for (int j = i + 1; j < _entries.Count; j++)
            {
                if (ReferenceEquals(_entries[j].Key, e.Key) && ReferenceEquals(_entries[j].Owner, e.Owner))
                {
                    throw new InvalidOperationException($"{_buffer}: two entries for ('{e.Key}', {e.Owner}).");
                }
            }
        }

        if (_entries.Count != 0 && _buffer.State == DmaBufState.Released)
        {
            throw new InvalidOperationException($"{_buffer}: {_entries.Count} metadata entries on a buffer that is {_buffer.State}.");
        }
    }

    private enum CreateOutcome
    {
        Stored,
        Lost,
        BufferGone,
        Moved,
        OwnerGone,
    }
}

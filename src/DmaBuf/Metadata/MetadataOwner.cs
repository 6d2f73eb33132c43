// Ownership: an owner does not own buffers. It tracks the metadata entries it created on any number of buffers so that
// tearing it down releases them; a buffer's release removes its entries from their owners, so an owner never keeps a
// released buffer reachable (rule 3).
using System.Diagnostics;

namespace DmaBuf;

/// <summary>
/// Who a metadata entry or cached mapping belongs to besides its buffer: a device, a driver context, an address space.
/// Disposing the owner releases every entry it still has, on every buffer (rule 4, owner teardown).
/// </summary>
/// <remarks>
/// <para>The owner's lock is a leaf: it is never held while a framework lock is taken, nor taken while one is held for
/// longer than a list update. Release callbacks run with no lock held.</para>
/// <para>Teardown racing a buffer's release: each entry is released exactly once, by whichever path takes it off its
/// buffer first. <see cref="Dispose()"/> returns only when every entry it had is released, by it or by the buffer.</para>
/// </remarks>
public class MetadataOwner : IDisposable
{
    // A Monitor, not System.Threading.Lock, so Coyote can schedule inside it.
    private readonly object _lock = new();
    private readonly HashSet<MetadataEntry> _entries = [];
    private bool _disposed;

    /// <summary>Creates an owner.</summary>
    public MetadataOwner(string name) => Name = name;

    /// <summary>Owner name.</summary>
    public string Name { get; }

    /// <summary>Entries this owner still has.</summary>
    public int EntryCount
    {
        get
        {
            lock (_lock)
            {
                return _entries.Count;
            }
        }
    }

    /// <summary>Whether the owner was torn down.</summary>
    public bool IsDisposed
    {
        get
        {
            lock (_lock)
            {
                return _disposed;
            }
        }
    }

    /// <summary>
    /// Tears the owner down: releases each of its entries (reason <see cref="MetadataReleaseReason.OwnerTeardown"/>),
    /// newest first, and returns when all are released.
    /// </summary>
    /// <exception cref="AggregateException">Release callbacks threw; every entry was released regardless.</exception>
    public void Dispose()
    {
        Dispose(disposing: true);
        GC.SuppressFinalize(this);
    }

    /// <inheritdoc/>
    public override string ToString() => Name;

    /// <summary>Releases the owner's entries; subclasses release their own state after calling the base.</summary>
    /// <exception cref="AggregateException">Release callbacks threw; every entry was released regardless.</exception>
    protected virtual void Dispose(bool disposing)
    {
        MetadataEntry[] entries;
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            entries = [.. _entries];
            _entries.Clear();
            AssertInvariantsLocked();
        }

        // Newest first, like a buffer's own teardown. An entry another path took off its buffer first (its buffer's
        // release, an eviction) is that path's to release; wait for it rather than race it.
        Array.Sort(entries, (a, b) => b.Sequence.CompareTo(a.Sequence));
        List<Exception>? errors = null;
        foreach (MetadataEntry e in entries)
        {
            if (e.Buffer is { } buffer && buffer.Metadata.Detach(e))
            {
                List<Exception>? failed = MetadataEntry.ReleaseAll([e], MetadataReleaseReason.OwnerTeardown, out _, forgetOwner: false);
                if (failed is not null)
                {
                    (errors ??= []).AddRange(failed);
                }
            }
        }

        foreach (MetadataEntry e in entries)
        {
            e.WaitReleased();
        }

        if (errors is not null)
        {
            throw new AggregateException($"Tearing down '{Name}': {errors.Count} release callback(s) threw; every entry was released.", errors);
        }
    }

    internal bool TryAdd(MetadataEntry entry)
    {
        lock (_lock)
        {
            bool added = !_disposed && _entries.Add(entry);
            AssertInvariantsLocked();
            return added;
        }
    }

    internal void Forget(MetadataEntry entry)
    {
        lock (_lock)
        {
            _entries.Remove(entry);
        }
    }

    /// <summary>Called after one of this owner's entries was released, for any reason.</summary>
    internal virtual void OnEntryReleased(MetadataEntry entry, MetadataReleaseReason reason)
    {
    }

    [Conditional("DEBUG")]
    private void AssertInvariantsLocked()
    {
        if (_disposed && _entries.Count != 0)
        {
            throw new InvalidOperationException($"Owner '{Name}' was torn down but still lists {_entries.Count} entries.");
        }
    }
}

// Ownership: an owner does not own buffers. It tracks the metadata entries it created on any number of buffers so that
// tearing it down releases them; a buffer's release removes its entries from their owners, so an owner never keeps a
// released buffer reachable (rule 3).
namespace DmaBuf;

/// <summary>
/// Who a metadata entry or cached mapping belongs to besides its buffer: a device, a driver context, an address space.
/// Disposing the owner releases every entry it still has, on every buffer (rule 4, owner teardown).
/// </summary>
/// <remarks>
/// The owner's lock is a leaf: it is never held while a framework lock is taken, nor taken while one is held for longer
/// than a list update. Release callbacks run with no lock held.
/// </remarks>
public class MetadataOwner : IDisposable
{
    private readonly Lock _lock = new();
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

    /// <summary>Tears the owner down: releases each of its entries (reason <see cref="MetadataReleaseReason.OwnerTeardown"/>).</summary>
    public void Dispose()
    {
        Dispose(disposing: true);
        GC.SuppressFinalize(this);
    }

    /// <inheritdoc/>
    public override string ToString() => Name;

    /// <summary>Releases the owner's entries; subclasses release their own state after calling the base.</summary>
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
        }

        // Newest first, like a buffer's own teardown.
        Array.Sort(entries, (a, b) => b.Sequence.CompareTo(a.Sequence));
        foreach (MetadataEntry e in entries)
        {
            e.Buffer?.Metadata.Detach(e);
            e.Release(MetadataReleaseReason.OwnerTeardown, forgetOwner: false);
        }
    }

    internal bool TryAdd(MetadataEntry entry)
    {
        lock (_lock)
        {
            return !_disposed && _entries.Add(entry);
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
}

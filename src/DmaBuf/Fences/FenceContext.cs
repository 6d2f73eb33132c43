namespace DmaBuf;

/// <summary>
/// A fence context (<c>dma_fence_context_alloc</c>): one timeline on which fences signal in the order of their sequence
/// numbers. Fences of one context can be compared with <see cref="Fence.IsLater"/>; fences of different contexts cannot.
/// </summary>
/// <remarks>Context ids come from one process-wide allocator and are never reused.</remarks>
public sealed class FenceContext
{
    private static long s_nextId;

    private FenceContext(long id, string name)
    {
        Id = id;
        Name = name;
    }

    /// <summary>The context's unique id.</summary>
    public long Id { get; }

    /// <summary>Name of the timeline, for listings and messages (<c>get_timeline_name</c>).</summary>
    public string Name { get; }

    /// <summary>Allocates a new context with a process-wide unique id.</summary>
    /// <param name="name">Timeline name, e.g. the device or ring that signals the fences.</param>
    /// <exception cref="ArgumentException"><paramref name="name"/> is null or empty.</exception>
    public static FenceContext Allocate(string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        return new FenceContext(Interlocked.Increment(ref s_nextId), name);
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Name}#{Id}";
}

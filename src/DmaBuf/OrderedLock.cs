// Lock ordering (design rule 9): registry -> buffer -> address space -> IOMMU, never reversed. Debug builds record
// the levels each thread holds and throw on a reversal, so a test that takes locks in the wrong order fails at once
// instead of deadlocking once in a million runs.
using System.Diagnostics;

namespace DmaBuf;

/// <summary>The levels of the framework's lock hierarchy. A thread may only take a lock of a higher level than any it holds.</summary>
public enum LockLevel
{
    /// <summary>A buffer registry's lock.</summary>
    Registry = 1,

    /// <summary>One buffer's lock (its reservation lock).</summary>
    Buffer = 2,

    /// <summary>A device address space's (IOMMU domain's) lock.</summary>
    AddressSpace = 3,

    /// <summary>An IOMMU unit's lock (command queue, IOTLB).</summary>
    Iommu = 4,
}

/// <summary>A lock was taken against the order of <see cref="LockLevel"/>.</summary>
public sealed class LockOrderException : InvalidOperationException
{
    /// <summary>Creates the exception with a message.</summary>
    public LockOrderException(string message) : base(message) { }

    /// <summary>Creates the exception with no message.</summary>
    public LockOrderException() { }

    /// <summary>Creates the exception with a message and inner exception.</summary>
    public LockOrderException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>
/// A lock (a Monitor) with a place in the framework's lock hierarchy. In debug builds it checks the order on every
/// acquisition and lets callers assert that no framework lock is held before they run a callback (rule 5).
/// </summary>
public sealed class OrderedLock
{
    [ThreadStatic]
    private static Held[]? t_held;

    [ThreadStatic]
    private static int t_depth;

    // A Monitor (lock on a plain object), not System.Threading.Lock: Coyote's rewriter controls Monitor, so the
    // systematic race tests can schedule threads inside buffer locks.
    private readonly object _lock = new();

    // The holder, tracked here rather than asked of the Monitor: Coyote's rewritten Monitor.IsEntered throws on a monitor
    // nobody holds. Written only by the holder, under the lock.
    private int _ownerThread;
    private int _recursion;

    /// <summary>Creates a lock at <paramref name="level"/>.</summary>
    public OrderedLock(LockLevel level, string name)
    {
        Level = level;
        Name = name;
    }

    /// <summary>The lock's level.</summary>
    public LockLevel Level { get; }

    /// <summary>Name, for error messages.</summary>
    public string Name { get; }

    /// <summary>Whether the current thread holds this lock.</summary>
    public bool IsHeldByCurrentThread => Volatile.Read(ref _ownerThread) == Environment.CurrentManagedThreadId;

    /// <summary>Takes the lock; dispose the scope to release it.</summary>
    /// <exception cref="LockOrderException">(Debug builds) the thread holds a lock of the same or a higher level.</exception>
    public Scope Enter()
    {
        CheckOrder();
        Monitor.Enter(_lock);
        if (_recursion++ == 0)
        {
            Volatile.Write(ref _ownerThread, Environment.CurrentManagedThreadId);
        }

        Push();
        return new Scope(this);
    }

    /// <summary>Number of ordered locks the current thread holds (debug builds; 0 in release builds).</summary>
    public static int HeldByCurrentThread => t_depth;

    /// <summary>
    /// (Debug builds) throws if the current thread holds any ordered lock. Called before every callback the framework
    /// runs: metadata release, invalidation, fence callbacks (rule 5).
    /// </summary>
    [Conditional("DEBUG")]
    public static void AssertNoneHeld(string what)
    {
        if (t_depth != 0)
        {
            Held top = t_held![t_depth - 1];
            throw new LockOrderException($"{what} would run with lock '{top.Lock.Name}' held; callbacks run outside every framework lock.");
        }
    }

    [Conditional("DEBUG")]
    private void CheckOrder()
    {
        if (t_depth == 0 || IsHeldByCurrentThread)
        {
            return;
        }

        Held top = t_held![t_depth - 1];
        if (top.Lock.Level >= Level)
        {
            throw new LockOrderException(
                $"Lock order violated: taking '{Name}' ({Level}) while holding '{top.Lock.Name}' ({top.Lock.Level}). " +
                "The order is Registry -> Buffer -> AddressSpace -> Iommu.");
        }
    }

    [Conditional("DEBUG")]
    private void Push()
    {
        t_held ??= new Held[8];
        if (t_depth == t_held.Length)
        {
            Array.Resize(ref t_held, t_depth * 2);
        }

        t_held[t_depth++] = new Held(this);
    }

    [Conditional("DEBUG")]
    private void Pop()
    {
        // Scopes are released in reverse order by construction (using blocks); a mismatch is a framework bug.
        Debug.Assert(t_depth > 0 && ReferenceEquals(t_held![t_depth - 1].Lock, this), "ordered locks released out of order");
        t_held![--t_depth] = default;
    }

    private void Exit()
    {
        Pop();
        if (--_recursion == 0)
        {
            Volatile.Write(ref _ownerThread, 0);
        }

        Monitor.Exit(_lock);
    }

    private readonly record struct Held(OrderedLock Lock);

    /// <summary>Holds an <see cref="OrderedLock"/> until disposed.</summary>
    public readonly ref struct Scope
    {
        private readonly OrderedLock _owner;

        internal Scope(OrderedLock owner) => _owner = owner;

        /// <summary>Releases the lock.</summary>
        public void Dispose() => _owner.Exit();
    }
}

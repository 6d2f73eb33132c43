// Ownership: a reservation object holds its fences until they are replaced by a later fence of the same context or
// pruned after signaling. Snapshots handed out (GetFences, SyncFile.Export) are copies: they never change afterwards.
using System.Diagnostics;

namespace DmaBuf;

/// <summary>
/// What a fence in a <see cref="ReservationObject"/> guards (<c>enum dma_resv_usage</c>). The classes are ordered:
/// asking for one class includes every class before it, so <see cref="Read"/> covers kernel, write and read fences and
/// <see cref="Bookkeep"/> covers all.
/// </summary>
public enum FenceUsage
{
    /// <summary>Kernel-internal work such as memory moves and clears; everyone waits for it.</summary>
    Kernel = 0,

    /// <summary>Implicit-sync writes: readers and writers wait for it.</summary>
    Write = 1,

    /// <summary>Implicit-sync reads: writers wait for it, readers do not.</summary>
    Read = 2,

    /// <summary>Fences nobody implicitly syncs to (explicitly synchronized submissions, page-table updates).</summary>
    Bookkeep = 3,
}

/// <summary>One fence held by a <see cref="ReservationObject"/>, with the usage it was added for.</summary>
/// <param name="Fence">The fence.</param>
/// <param name="Usage">What it guards.</param>
public readonly record struct ReservationFence(Fence Fence, FenceUsage Usage);

/// <summary>
/// The fences that guard one buffer (<c>struct dma_resv</c>), by usage class, behind the buffer's lock.
/// </summary>
/// <remarks>
/// <para><b>Locking.</b> The reservation lock is the buffer lock (<see cref="LockLevel.Buffer"/>, design rule 9):
/// <see cref="DmaBuffer"/> creates its reservation object with its own lock, so holding one holds the other. Every
/// member takes <see cref="Lock"/> (it is re-entrant, so callers may hold it around several calls). Waits take it only
/// to copy the fences and block after releasing it; waiting while holding it throws.</para>
/// <para><b>Adding.</b> As with <c>dma_resv_reserve_fences</c>/<c>dma_resv_add_fence</c>: <see cref="Reserve"/> slots,
/// then <see cref="AddFence"/> consumes one per call. A caller that must not lose its slots to another thread holds
/// <see cref="Lock"/> across both. A fence replaces the held fence of its context when that one is of the same or a
/// weaker usage class and not later than it, and takes the place of any fence that has already signaled.</para>
/// <para><b>Reading.</b> <see cref="GetFences"/>, <see cref="Test"/> and the waits see the fences of the asked class
/// and of every class before it. Signaled fences may be pruned at any call; snapshots skip them.</para>
/// </remarks>
public sealed class ReservationObject
{
    private readonly List<ReservationFence> _fences = [];
    private int _reserved;

    /// <summary>Creates an empty reservation object guarded by <paramref name="lock"/>, or by a new lock if none is given.</summary>
    /// <param name="lock">The buffer lock to share; must be at <see cref="LockLevel.Buffer"/>.</param>
    /// <exception cref="ArgumentException"><paramref name="lock"/> is not a buffer-level lock.</exception>
    public ReservationObject(OrderedLock? @lock = null)
    {
        if (@lock is not null && @lock.Level != LockLevel.Buffer)
        {
            throw new ArgumentException($"A reservation lock is a buffer lock; '{@lock.Name}' is at level {@lock.Level}.", nameof(@lock));
        }

        Lock = @lock ?? new OrderedLock(LockLevel.Buffer, "resv");
    }

    /// <summary>The reservation lock, which is the buffer's lock.</summary>
    public OrderedLock Lock { get; }

    /// <summary>Number of fences held that have not signaled yet (signaled ones are pruned first).</summary>
    public int Count
    {
        get
        {
            using OrderedLock.Scope scope = Lock.Enter();
            PruneLocked();
            return _fences.Count;
        }
    }

    /// <summary>Slots reserved by <see cref="Reserve"/> and not yet used by <see cref="AddFence"/>.</summary>
    public int ReservedSlots
    {
        get
        {
            using OrderedLock.Scope scope = Lock.Enter();
            return _reserved;
        }
    }

    /// <summary>
    /// The usage to ask for when implicitly synchronizing an access (<c>dma_resv_usage_rw</c>): a writer waits for
    /// <see cref="FenceUsage.Read"/> (every reader and writer), a reader for <see cref="FenceUsage.Write"/> (writers only).
    /// </summary>
    public static FenceUsage UsageForAccess(bool write) => write ? FenceUsage.Read : FenceUsage.Write;

    /// <summary>
    /// Makes sure the next <paramref name="slots"/> calls to <see cref="AddFence"/> succeed (<c>dma_resv_reserve_fences</c>).
    /// Like the kernel's, reservations do not add up: reserving 1 twice leaves 1 slot.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="slots"/> is negative.</exception>
    public void Reserve(int slots)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(slots);
        using OrderedLock.Scope scope = Lock.Enter();
        _reserved = Math.Max(_reserved, slots);
        AssertInvariantsLocked();
    }

    /// <summary>
    /// Adds <paramref name="fence"/> for <paramref name="usage"/> (<c>dma_resv_add_fence</c>), using one reserved slot.
    /// The fence replaces a held fence of the same context whose usage is the same or weaker and which it does not
    /// precede, or the first held fence that has already signaled; otherwise it is appended.
    /// </summary>
    /// <exception cref="InvalidOperationException">No slot is reserved: call <see cref="Reserve"/> first.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="usage"/> is not a <see cref="FenceUsage"/>.</exception>
    public void AddFence(Fence fence, FenceUsage usage)
    {
        ArgumentNullException.ThrowIfNull(fence);
        ValidateUsage(usage);
        using OrderedLock.Scope scope = Lock.Enter();
        if (_reserved == 0)
        {
            throw new InvalidOperationException(
                $"AddFence({fence}, {usage}) without a reserved slot: call Reserve before AddFence, holding Lock across both.");
        }

        _reserved--;
        AddLocked(fence, usage);
    }

    /// <summary>
    /// The unsignaled fences of <paramref name="usage"/> and of every class before it, as a snapshot
    /// (<c>dma_resv_get_fences</c>). Later changes to the reservation object do not affect it.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="usage"/> is not a <see cref="FenceUsage"/>.</exception>
    public IReadOnlyList<Fence> GetFences(FenceUsage usage)
    {
        ValidateUsage(usage);
        using OrderedLock.Scope scope = Lock.Enter();
        PruneLocked();
        var result = new List<Fence>(_fences.Count);
        foreach (ReservationFence entry in _fences)
        {
            if (entry.Usage <= usage)
            {
                result.Add(entry.Fence);
            }
        }

        return result;
    }

    /// <summary>
    /// Like <see cref="GetFences"/>, with the usage each fence was added for (what <c>dma_resv_for_each_fence</c> walks).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="usage"/> is not a <see cref="FenceUsage"/>.</exception>
    public IReadOnlyList<ReservationFence> GetEntries(FenceUsage usage)
    {
        ValidateUsage(usage);
        using OrderedLock.Scope scope = Lock.Enter();
        PruneLocked();
        return _fences.FindAll(e => e.Usage <= usage);
    }

    /// <summary>Whether every fence of <paramref name="usage"/> and the classes before it has signaled (<c>dma_resv_test_signaled</c>).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="usage"/> is not a <see cref="FenceUsage"/>.</exception>
    public bool Test(FenceUsage usage)
    {
        ValidateUsage(usage);
        using OrderedLock.Scope scope = Lock.Enter();
        foreach (ReservationFence entry in _fences)
        {
            if (entry.Usage <= usage && !entry.Fence.IsSignaled)
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// Waits until every fence of <paramref name="usage"/> and the classes before it that is held now has signaled
    /// (<c>dma_resv_wait_timeout</c>). Fences added after the call starts are not waited for. The lock is held only to
    /// copy the fences.
    /// </summary>
    /// <param name="usage">The usage class to wait for.</param>
    /// <param name="timeout">Total time to wait; <see cref="Timeout.InfiniteTimeSpan"/> waits for ever, zero only tests.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>True if all of them signaled; false if the timeout passed first.</returns>
    /// <exception cref="InvalidOperationException">The calling thread holds <see cref="Lock"/>.</exception>
    /// <exception cref="OperationCanceledException">The token was canceled.</exception>
    public bool Wait(FenceUsage usage, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ThrowIfLockHeld();
        Fence.ValidateTimeout(timeout);
        return FenceWaits.WaitAll(GetFences(usage), timeout, cancellationToken);
    }

    /// <summary>Waits asynchronously; see <see cref="Wait"/>.</summary>
    /// <returns>True if all of them signaled; false if the timeout passed first.</returns>
    /// <exception cref="InvalidOperationException">The calling thread holds <see cref="Lock"/>.</exception>
    /// <exception cref="OperationCanceledException">The token was canceled.</exception>
    public Task<bool> WaitAsync(FenceUsage usage, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ThrowIfLockHeld();
        Fence.ValidateTimeout(timeout);
        return FenceWaits.WaitAllAsync(GetFences(usage), timeout, cancellationToken);
    }

    /// <summary>
    /// Adds the fences of <paramref name="syncFile"/> (<c>DMA_BUF_IOCTL_IMPORT_SYNC_FILE</c>): with
    /// <see cref="FenceUsage.Read"/> later writers wait for them, with <see cref="FenceUsage.Write"/> (also for
    /// read-write access) every later reader and writer does. Reserves its own slots.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="usage"/> is neither Read nor Write.</exception>
    public void Import(SyncFile syncFile, FenceUsage usage)
    {
        ArgumentNullException.ThrowIfNull(syncFile);
        if (usage is not (FenceUsage.Read or FenceUsage.Write))
        {
            throw new ArgumentOutOfRangeException(nameof(usage), usage, "Import takes FenceUsage.Read or FenceUsage.Write (use Write for read-write access).");
        }

        using OrderedLock.Scope scope = Lock.Enter();
        foreach (Fence fence in syncFile.Fences)
        {
            AddLocked(fence, usage);
        }
    }

    /// <inheritdoc/>
    public override string ToString() => $"resv ({Lock.Name})";

    internal static void ValidateUsage(FenceUsage usage)
    {
        if (usage is < FenceUsage.Kernel or > FenceUsage.Bookkeep)
        {
            throw new ArgumentOutOfRangeException(nameof(usage), usage, "Not a FenceUsage.");
        }
    }

    private void AddLocked(Fence fence, FenceUsage usage)
    {
        Debug.Assert(Lock.IsHeldByCurrentThread);
        for (int i = 0; i < _fences.Count; i++)
        {
            ReservationFence old = _fences[i];
            bool supersedes = ReferenceEquals(old.Fence.Context, fence.Context) && old.Usage >= usage && Fence.IsLaterOrSame(fence, old.Fence);
            if (supersedes || old.Fence.IsSignaled)
            {
                _fences[i] = new ReservationFence(fence, usage);
                AssertInvariantsLocked();
                return;
            }
        }

        _fences.Add(new ReservationFence(fence, usage));
        AssertInvariantsLocked();
    }

    private void PruneLocked()
    {
        _fences.RemoveAll(static e => e.Fence.IsSignaled);
    }

    private void ThrowIfLockHeld()
    {
        if (Lock.IsHeldByCurrentThread)
        {
            throw new InvalidOperationException(
                $"Waiting on {this} while holding its lock would block every other user of the buffer; release it first.");
        }
    }

    [Conditional("DEBUG")]
    private void AssertInvariantsLocked()
    {
        Debug.Assert(Lock.IsHeldByCurrentThread, "invariants are checked under the reservation lock");
        if (_reserved < 0)
        {
            throw new InvalidOperationException($"{this}: {_reserved} reserved slots.");
        }

        for (int i = 0; i < _fences.Count; i++)
        {
            ReservationFence e = _fences[i];
            if (e.Fence is null || e.Usage is < FenceUsage.Kernel or > FenceUsage.Bookkeep)
            {
                throw new InvalidOperationException($"{this}: invalid entry {i}.");
            }

            for (int j = i + 1; j < _fences.Count; j++)
            {
                if (ReferenceEquals(_fences[j].Fence, e.Fence) && _fences[j].Usage == e.Usage)
                {
                    throw new InvalidOperationException($"{this}: {e.Fence} held twice for {e.Usage}.");
                }
            }
        }
    }
}

/// <summary>Waiting for several fences within one timeout.</summary>
internal static class FenceWaits
{
    public static bool WaitAll(IReadOnlyList<Fence> fences, TimeSpan timeout, CancellationToken cancellationToken)
    {
        long start = Stopwatch.GetTimestamp();
        foreach (Fence fence in fences)
        {
            if (!fence.Wait(Remaining(timeout, start), cancellationToken))
            {
                return false;
            }
        }

        return true;
    }

    public static async Task<bool> WaitAllAsync(IReadOnlyList<Fence> fences, TimeSpan timeout, CancellationToken cancellationToken)
    {
        long start = Stopwatch.GetTimestamp();
        foreach (Fence fence in fences)
        {
            if (!await fence.WaitAsync(Remaining(timeout, start), cancellationToken).ConfigureAwait(false))
            {
                return false;
            }
        }

        return true;
    }

    private static TimeSpan Remaining(TimeSpan timeout, long start)
    {
        if (timeout == Timeout.InfiniteTimeSpan)
        {
            return timeout;
        }

        TimeSpan left = timeout - Stopwatch.GetElapsedTime(start);
        return left > TimeSpan.Zero ? left : TimeSpan.Zero;
    }
}

// Ownership: a sync file is an immutable snapshot: a fixed set of fences taken at creation. It holds no lock and no
// buffer reference, so it can outlive the buffer it was exported from, as a sync_file fd can.
namespace DmaBuf;

/// <summary>
/// An immutable set of fences to wait for (<c>struct sync_file</c>): what <c>DMA_BUF_IOCTL_EXPORT_SYNC_FILE</c> hands
/// out and <c>DMA_BUF_IOCTL_IMPORT_SYNC_FILE</c> takes back (see <see cref="ReservationObject.Import"/>).
/// </summary>
/// <remarks>
/// A sync file holds at most one fence per <see cref="FenceContext"/>, the latest it was given, since on one timeline
/// the later fence implies the earlier ones. It signals when all its fences have; one with no fences is signaled from
/// the start. Fences added to a reservation object after an export are not in the exported file.
/// </remarks>
public sealed class SyncFile
{
    private static readonly SyncFile s_empty = new([]);

    private readonly Fence[] _fences;

    private SyncFile(Fence[] fences) => _fences = fences;

    /// <summary>The fences, at most one per context.</summary>
    public IReadOnlyList<Fence> Fences => _fences;

    /// <summary>
    /// 0 while any fence is pending; once all have signaled, the first error among them in <see cref="Fences"/> order,
    /// or 1 if none failed (<c>SYNC_IOC_FILE_INFO</c> status).
    /// </summary>
    public int Status
    {
        get
        {
            int error = 0;
            foreach (Fence fence in _fences)
            {
                int status = fence.Status;
                if (status == 0)
                {
                    return 0;
                }

                if (status < 0 && error == 0)
                {
                    error = status;
                }
            }

            return error != 0 ? error : 1;
        }
    }

    /// <summary>Whether every fence has signaled (the file polls readable).</summary>
    public bool IsSignaled
    {
        get
        {
            foreach (Fence fence in _fences)
            {
                if (!fence.IsSignaled)
                {
                    return false;
                }
            }

            return true;
        }
    }

    /// <summary>A sync file for one fence (<c>sync_file_create</c>).</summary>
    public static SyncFile Create(Fence fence)
    {
        ArgumentNullException.ThrowIfNull(fence);
        return new SyncFile([fence]);
    }

    /// <summary>A sync file for several fences, keeping the latest per context.</summary>
    public static SyncFile Create(IEnumerable<Fence> fences)
    {
        ArgumentNullException.ThrowIfNull(fences);
        return FromFences(fences);
    }

    /// <summary>
    /// Snapshots what an access would wait for (<c>DMA_BUF_IOCTL_EXPORT_SYNC_FILE</c>): for <see cref="FenceUsage.Read"/>
    /// access, the fences a reader waits for (kernel and write fences); for <see cref="FenceUsage.Write"/> (also for
    /// read-write access), every kernel, write and read fence. Takes the reservation lock to copy the fences.
    /// </summary>
    /// <param name="reservation">The buffer's reservation object.</param>
    /// <param name="access">The access the caller is about to make: Read or Write.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="access"/> is neither Read nor Write.</exception>
    public static SyncFile Export(ReservationObject reservation, FenceUsage access)
    {
        ArgumentNullException.ThrowIfNull(reservation);
        if (access is not (FenceUsage.Read or FenceUsage.Write))
        {
            throw new ArgumentOutOfRangeException(nameof(access), access, "Export takes the access: FenceUsage.Read or FenceUsage.Write.");
        }

        return FromFences(reservation.GetFences(ReservationObject.UsageForAccess(write: access == FenceUsage.Write)));
    }

    /// <summary>
    /// A new sync file that signals when both inputs have (<c>SYNC_IOC_MERGE</c>): the union of their fences, keeping the
    /// latest per context. The inputs are unchanged.
    /// </summary>
    public static SyncFile Merge(SyncFile first, SyncFile second)
    {
        ArgumentNullException.ThrowIfNull(first);
        ArgumentNullException.ThrowIfNull(second);
        return FromFences(first._fences.Concat(second._fences));
    }

    /// <summary>Blocks until every fence has signaled or the timeout passes; see <see cref="Fence.Wait"/>.</summary>
    /// <returns>True if all fences signaled; false if the timeout passed first.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The timeout is negative and not infinite.</exception>
    /// <exception cref="OperationCanceledException">The token was canceled.</exception>
    public bool Wait(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        Fence.ValidateTimeout(timeout);
        return FenceWaits.WaitAll(_fences, timeout, cancellationToken);
    }

    /// <summary>Waits asynchronously; see <see cref="Wait"/>.</summary>
    /// <returns>True if all fences signaled; false if the timeout passed first.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The timeout is negative and not infinite.</exception>
    /// <exception cref="OperationCanceledException">The token was canceled.</exception>
    public Task<bool> WaitAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        Fence.ValidateTimeout(timeout);
        return FenceWaits.WaitAllAsync(_fences, timeout, cancellationToken);
    }

    /// <inheritdoc/>
    public override string ToString() => $"sync_file ({_fences.Length} fences, status {Status})";

    private static SyncFile FromFences(IEnumerable<Fence> fences)
    {
        var latest = new List<Fence>();
        foreach (Fence fence in fences)
        {
            ArgumentNullException.ThrowIfNull(fence, nameof(fences));
            int i = latest.FindIndex(f => ReferenceEquals(f.Context, fence.Context));
            if (i < 0)
            {
                latest.Add(fence);
            }
            else if (Fence.IsLater(fence, latest[i]))
            {
                latest[i] = fence;
            }
        }

        return latest.Count == 0 ? s_empty : new SyncFile([.. latest]);
    }
}

// Ownership: a KernelSyncFile owns its sync_file descriptor and closes it on Dispose. FromDescriptor takes ownership of
// the descriptor it is given (also when it throws). Merge and the exporters return new descriptors the caller owns.
// A Fence made by ToFence holds a duplicate of the descriptor until the kernel fence signals, then closes it.
using System.Diagnostics;

namespace DmaBuf.Linux;

/// <summary>One fence of a kernel sync_file, as <c>SYNC_IOC_FILE_INFO</c> reports it (<c>struct sync_fence_info</c>).</summary>
/// <param name="Timeline">The fence's timeline (<c>obj_name</c>), e.g. the ring or the driver's context.</param>
/// <param name="Driver">The driver that signals it (<c>driver_name</c>), e.g. <c>vgem</c>.</param>
/// <param name="Status">0 pending, 1 signaled, a negative errno when it signaled with an error.</param>
/// <param name="TimestampNs">When it signaled (CLOCK_MONOTONIC, ns); 0 while pending.</param>
public readonly record struct KernelFenceInfo(string Timeline, string Driver, int Status, long TimestampNs);

/// <summary>
/// A kernel sync_file (<c>struct sync_file</c> behind a descriptor): a fixed set of kernel fences that user space can
/// wait for with <c>poll</c>, inspect with <c>SYNC_IOC_FILE_INFO</c>, merge with <c>SYNC_IOC_MERGE</c>, send to another
/// process as a descriptor, and put on a dma-buf (<see cref="KernelFences.ImportSyncFile"/>).
/// </summary>
/// <remarks>
/// <para><b>Framework view.</b> <see cref="ToFence"/> gives a framework <see cref="Fence"/> that signals (with the
/// sync_file's error, if any) when the kernel's fences have; <see cref="ToSyncFile"/> wraps it in a framework
/// <see cref="SyncFile"/>, which a <see cref="ReservationObject"/> can import. So a kernel's fences and simulated ones
/// are waited for the same way.</para>
/// <para><b>Threads.</b> Every member is thread-safe. <see cref="Wait"/> blocks the calling thread in <c>poll</c>.</para>
/// </remarks>
public sealed class KernelSyncFile : IDisposable
{
    private readonly SafeFdHandle _fd;
    private Fence? _fence;

    private KernelSyncFile(SafeFdHandle fd) => _fd = fd;

    /// <summary>The sync_file descriptor (owned by this object).</summary>
    public SafeFdHandle Descriptor => _fd;

    /// <summary>The sync_file's name (<c>SYNC_IOC_FILE_INFO</c>); the kernel names exported ones after the exporter.</summary>
    /// <exception cref="ObjectDisposedException">The sync file was disposed.</exception>
    public string Name
    {
        get
        {
            (Interop.Libc.sync_file_info file, _) = Info();
            return FileName(file);
        }
    }

    /// <summary>0 while a fence is pending; once all signaled, 1, or the first error (<c>SYNC_IOC_FILE_INFO</c> status).</summary>
    /// <exception cref="ObjectDisposedException">The sync file was disposed.</exception>
    public int Status => Info().File.status;

    /// <summary>Whether every fence has signaled: the descriptor polls readable.</summary>
    /// <exception cref="ObjectDisposedException">The sync file was disposed.</exception>
    public bool IsSignaled => Wait(TimeSpan.Zero);

    /// <summary>Its fences, as the kernel reports them now.</summary>
    /// <exception cref="ObjectDisposedException">The sync file was disposed.</exception>
    public IReadOnlyList<KernelFenceInfo> Fences
    {
        get
        {
            (_, Interop.Libc.sync_fence_info[] fences) = Info();
            return [.. fences.Select(ToInfo)];
        }
    }

    /// <summary>
    /// Takes ownership of <paramref name="fd"/> and checks that it is a sync_file (<c>SYNC_IOC_FILE_INFO</c> answers),
    /// e.g. one received from another process.
    /// </summary>
    /// <exception cref="ArgumentException">The descriptor is not a sync_file; it is closed.</exception>
    public static KernelSyncFile FromDescriptor(SafeFdHandle fd)
    {
        ArgumentNullException.ThrowIfNull(fd);
        try
        {
            _ = Interop.Libc.SyncFileInfo(fd);
        }
        catch (LinuxErrorException e)
        {
            string target = SafeLinkTarget(fd);
            fd.Dispose();
            throw new ArgumentException($"The descriptor ({target}) is not a sync_file: SYNC_IOC_FILE_INFO failed with {e.ErrnoName}.", nameof(fd), e);
        }

        return new KernelSyncFile(fd);
    }

    /// <summary>
    /// A new sync_file named <paramref name="name"/> that signals when both have (<c>SYNC_IOC_MERGE</c>); the inputs
    /// stay as they are.
    /// </summary>
    /// <exception cref="ObjectDisposedException">One of them was disposed.</exception>
    /// <exception cref="LinuxErrorException">The kernel refused the merge.</exception>
    public static KernelSyncFile Merge(KernelSyncFile first, KernelSyncFile second, string name)
    {
        ArgumentNullException.ThrowIfNull(first);
        ArgumentNullException.ThrowIfNull(second);
        ArgumentNullException.ThrowIfNull(name);
        ObjectDisposedException.ThrowIf(first._fd.IsClosed, first);
        ObjectDisposedException.ThrowIf(second._fd.IsClosed, second);
        return new KernelSyncFile(Interop.Libc.SyncFileMerge(first._fd, second._fd, name));
    }

    /// <summary>Waits up to <paramref name="timeout"/> for every fence to signal (<c>poll</c> for POLLIN).</summary>
    /// <returns>True once signaled; false if the timeout passed first.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The timeout is negative and not infinite, or too large.</exception>
    /// <exception cref="ObjectDisposedException">The sync file was disposed.</exception>
    public bool Wait(TimeSpan timeout)
    {
        int ms = KernelFences.TimeoutMilliseconds(timeout);
        ObjectDisposedException.ThrowIf(_fd.IsClosed, this);
        return Interop.Libc.PollReadable(_fd, ms);
    }

    /// <summary>
    /// A framework fence that signals when this sync_file does: with <see cref="Fence.SignalWithError"/> when the
    /// kernel reports an error, otherwise with <see cref="Fence.Signal"/>. Its context is named after the kernel's
    /// driver and timeline. A background thread waits in <c>poll</c> on a duplicate of the descriptor and signals it;
    /// the same fence is returned on every call.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The sync file was disposed.</exception>
    public Fence ToFence()
    {
        ObjectDisposedException.ThrowIf(_fd.IsClosed, this);
        if (Volatile.Read(ref _fence) is { } made)
        {
            return made;
        }

        IReadOnlyList<KernelFenceInfo> fences = Fences;
        string timeline = fences.Count == 0 ? "sync_file" : $"{fences[0].Driver}:{fences[0].Timeline}";
        var fence = new Fence(FenceContext.Allocate(timeline), 1);
        if (Interlocked.CompareExchange(ref _fence, fence, null) is { } raced)
        {
            return raced;
        }

        if (Status != 0)
        {
            SignalFrom(fence, Status);
            return fence;
        }

        SafeFdHandle watched = Interop.Libc.Duplicate(_fd);
        try
        {
            var watcher = new Thread(Watch) { IsBackground = true, Name = "sync_file watcher" };
            watcher.Start((watched, fence));
            watched = null!; // the watcher owns it now
        }
        finally
        {
            watched?.Dispose(); // the thread did not start
        }

        return fence;
    }

    /// <summary>A framework sync file of <see cref="ToFence"/>: what a <see cref="ReservationObject"/> imports.</summary>
    /// <exception cref="ObjectDisposedException">The sync file was disposed.</exception>
    public SyncFile ToSyncFile() => SyncFile.Create(ToFence());

    /// <summary>Closes the descriptor. A fence made by <see cref="ToFence"/> still signals.</summary>
    public void Dispose() => _fd.Dispose();

    /// <inheritdoc/>
    public override string ToString()
    {
        if (_fd.IsClosed)
        {
            return "sync_file (closed)";
        }

        (Interop.Libc.sync_file_info file, Interop.Libc.sync_fence_info[] fences) = Info();
        return $"sync_file '{FileName(file)}' ({fences.Length} fences: {string.Join(", ", fences.Select(f => Describe(ToInfo(f))))})";
    }

    internal static KernelSyncFile Own(SafeFdHandle fd) => new(fd);

    internal static string Describe(KernelFenceInfo f) =>
        $"{f.Driver} {f.Timeline} {(f.Status == 0 ? "pending" : f.Status == 1 ? "signaled" : $"error {f.Status}")}";

    /// <summary>The watcher thread: owns the duplicate descriptor, waits for the kernel, signals the framework fence.</summary>
    private static void Watch(object? state)
    {
        (SafeFdHandle watched, Fence fence) = ((SafeFdHandle, Fence))state!;
        using (watched)
        {
            Interop.Libc.PollReadable(watched, -1);
            SignalFrom(fence, Interop.Libc.SyncFileInfo(watched).File.status);
        }
    }

    private static void SignalFrom(Fence fence, int status)
    {
        if (status < 0 && status >= -Fence.MaxErrno)
        {
            fence.SignalWithError(status);
        }
        else
        {
            fence.Signal();
        }
    }

    private (Interop.Libc.sync_file_info File, Interop.Libc.sync_fence_info[] Fences) Info()
    {
        ObjectDisposedException.ThrowIf(_fd.IsClosed, this);
        return Interop.Libc.SyncFileInfo(_fd);
    }

    private static unsafe string FileName(Interop.Libc.sync_file_info file) =>
        Interop.Libc.FixedName(file.name, Interop.Libc.SYNC_NAME_LEN);

    private static unsafe KernelFenceInfo ToInfo(Interop.Libc.sync_fence_info f) => new(
        Interop.Libc.FixedName(f.obj_name, Interop.Libc.SYNC_NAME_LEN),
        Interop.Libc.FixedName(f.driver_name, Interop.Libc.SYNC_NAME_LEN),
        f.status,
        (long)f.timestamp_ns);

    private static string SafeLinkTarget(SafeFdHandle fd)
    {
        try
        {
            return Interop.Libc.FdLinkTarget(fd);
        }
        catch (Exception e) when (e is LinuxErrorException or ObjectDisposedException)
        {
            Debug.WriteLine(e.Message);
            return "unknown";
        }
    }
}

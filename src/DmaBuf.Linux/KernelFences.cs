namespace DmaBuf.Linux;

/// <summary>
/// Implicit synchronization with a kernel's fences on real dma-bufs: the fences a driver attached to a buffer's
/// reservation object (a GPU's render, a capture) as seen from user space, through <c>poll</c> on the dma-buf and
/// <c>DMA_BUF_IOCTL_EXPORT_SYNC_FILE</c> / <c>IMPORT_SYNC_FILE</c>.
/// </summary>
/// <remarks>
/// <para><b>Which fences.</b> A reader waits for the buffer's writers; a writer waits for every reader and writer. So
/// <see cref="CpuAccess.Read"/> polls for POLLIN and exports the write fences, <see cref="CpuAccess.Write"/> and
/// <see cref="CpuAccess.ReadWrite"/> poll for POLLOUT and export all of them (include/uapi/linux/dma-buf.h).</para>
/// <para><b>CPU access.</b> <c>DMA_BUF_IOCTL_SYNC</c>, which <see cref="DmaBufHandle.BeginCpuAccess"/> issues, itself
/// waits for those fences, without a timeout. <see cref="BeginCpuAccess(DmaBufHandle, CpuAccess, TimeSpan)"/> waits
/// with one first and throws <see cref="TimeoutException"/> naming the fences still pending; a fence a driver adds
/// between that wait and the ioctl is still waited for, by the ioctl.</para>
/// <para><b>Buffers.</b> Only dma-bufs have kernel fences. A memfd buffer has none: every wait returns at once and
/// exporting gives an empty, signaled sync file.</para>
/// </remarks>
public static class KernelFences
{
    /// <summary>
    /// Waits up to <paramref name="timeout"/> until an access of <paramref name="access"/> would not wait for a kernel
    /// fence (<c>poll</c> on the dma-buf: POLLIN for reads, POLLOUT for writes).
    /// </summary>
    /// <returns>True when the fences have signaled; false when the timeout passed first.</returns>
    /// <exception cref="ArgumentException">The access flags are empty or unknown, or the buffer is not a Linux buffer.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The timeout is negative and not infinite, or too large.</exception>
    /// <exception cref="ObjectDisposedException">The handle was disposed.</exception>
    public static bool WaitForFences(this DmaBufHandle handle, CpuAccess access, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(handle);
        short events = PollEvents(access);
        int ms = TimeoutMilliseconds(timeout);
        LinuxBuffer linux = handle.Buffer.GetLinuxBuffer();
        if (linux.Kind != LinuxBufferKind.DmaBuf)
        {
            return true;
        }

        return Interop.Libc.Poll(linux.Fd, events, ms) != 0;
    }

    /// <summary>
    /// <see cref="DmaBufHandle.BeginCpuAccess"/>, after waiting up to <paramref name="timeout"/> for the kernel fences
    /// the access must wait for.
    /// </summary>
    /// <exception cref="TimeoutException">The fences did not signal in time. The message names the buffer, the access,
    /// the timeout and each pending fence (driver, timeline); no CPU access was begun.</exception>
    /// <exception cref="ArgumentException">The access flags are empty or unknown, or the buffer is not a Linux buffer.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The timeout is negative and not infinite, or too large.</exception>
    /// <exception cref="ObjectDisposedException">The handle was disposed.</exception>
    public static void BeginCpuAccess(this DmaBufHandle handle, CpuAccess access, TimeSpan timeout)
    {
        if (!WaitForFences(handle, access, timeout))
        {
            throw new TimeoutException(
                $"CPU {access} access to {handle.Buffer} waited {timeout.TotalMilliseconds:0} ms for kernel fences that did not signal: " +
                PendingFences(handle, access) + ". Nothing was begun; wait longer, or find what never signals its fence.");
        }

        handle.BeginCpuAccess(access);
    }

    /// <summary>
    /// The kernel fences an access of <paramref name="access"/> would wait for now, as a sync_file
    /// (<c>DMA_BUF_IOCTL_EXPORT_SYNC_FILE</c>). Fences added later are not in it.
    /// </summary>
    /// <exception cref="ArgumentException">The access flags are empty or unknown, or the buffer is not a Linux buffer.</exception>
    /// <exception cref="NotSupportedException">The buffer is a memfd, which has no kernel fences.</exception>
    /// <exception cref="LinuxErrorException">The kernel refused (before 5.20 it has no such ioctl: ENOTTY).</exception>
    /// <exception cref="ObjectDisposedException">The handle was disposed.</exception>
    public static KernelSyncFile ExportSyncFile(this DmaBufHandle handle, CpuAccess access)
    {
        ArgumentNullException.ThrowIfNull(handle);
        uint flags = SyncFlags(access);
        LinuxBuffer linux = RequireDmaBuf(handle, "export a sync_file from");
        return KernelSyncFile.Own(Interop.Libc.DmaBufExportSyncFile(linux.Fd, flags));
    }

    /// <summary>
    /// Puts the fences of <paramref name="syncFile"/> on the buffer (<c>DMA_BUF_IOCTL_IMPORT_SYNC_FILE</c>): with
    /// <see cref="CpuAccess.Read"/> as read fences (later writers wait for them), otherwise as write fences (every later
    /// access waits). The sync file stays the caller's.
    /// </summary>
    /// <exception cref="ArgumentException">The access flags are empty or unknown, or the buffer is not a Linux buffer.</exception>
    /// <exception cref="NotSupportedException">The buffer is a memfd, which has no kernel fences.</exception>
    /// <exception cref="LinuxErrorException">The kernel refused.</exception>
    /// <exception cref="ObjectDisposedException">The handle or the sync file was disposed.</exception>
    public static void ImportSyncFile(this DmaBufHandle handle, KernelSyncFile syncFile, CpuAccess access)
    {
        ArgumentNullException.ThrowIfNull(handle);
        ArgumentNullException.ThrowIfNull(syncFile);
        uint flags = SyncFlags(access);
        LinuxBuffer linux = RequireDmaBuf(handle, "import a sync_file into");
        ObjectDisposedException.ThrowIf(syncFile.Descriptor.IsClosed, syncFile);
        Interop.Libc.DmaBufImportSyncFile(linux.Fd, syncFile.Descriptor, flags);
    }

    /// <summary>
    /// Copies the kernel fences an access of <paramref name="access"/> would wait for into the buffer's framework
    /// <see cref="DmaBuffer.Resv"/>, as framework fences (<see cref="KernelSyncFile.ToFence"/>): write fences for a
    /// read, all fences (as write fences) for a write. Afterwards <see cref="ReservationObject.Wait"/> and
    /// <see cref="ReservationObject.Test"/> on the buffer see the kernel's work too.
    /// </summary>
    /// <returns>The framework fence that was added (signaled at once when nothing was pending).</returns>
    /// <exception cref="ArgumentException">The access flags are empty or unknown, or the buffer is not a Linux buffer.</exception>
    /// <exception cref="NotSupportedException">The buffer is a memfd, which has no kernel fences.</exception>
    /// <exception cref="LinuxErrorException">The kernel refused the export.</exception>
    /// <exception cref="ObjectDisposedException">The handle was disposed.</exception>
    public static Fence ImportKernelFences(this DmaBufHandle handle, CpuAccess access)
    {
        using KernelSyncFile exported = ExportSyncFile(handle, access);
        SyncFile framework = exported.ToSyncFile();
        // A reader's export holds the kernel's writers; a writer's holds readers too. Both go in as write fences: every
        // later framework access waits for them (for the readers of a write export that is more than needed, never less).
        handle.Buffer.Resv.Import(framework, FenceUsage.Write);
        return framework.Fences[0];
    }

    internal static int TimeoutMilliseconds(TimeSpan timeout)
    {
        if (timeout == Timeout.InfiniteTimeSpan)
        {
            return -1;
        }

        if (timeout < TimeSpan.Zero || timeout.TotalMilliseconds > int.MaxValue)
        {
            throw new ArgumentOutOfRangeException(
                nameof(timeout), timeout, "The timeout must be zero or positive (at most int.MaxValue ms), or Timeout.InfiniteTimeSpan.");
        }

        return (int)Math.Ceiling(timeout.TotalMilliseconds);
    }

    private static short PollEvents(CpuAccess access) => access switch
    {
        CpuAccess.Read => Interop.Libc.POLLIN,
        CpuAccess.Write or CpuAccess.ReadWrite => Interop.Libc.POLLOUT,
        _ => throw new ArgumentException($"CPU access must be Read, Write or ReadWrite (got {access}).", nameof(access)),
    };

    private static uint SyncFlags(CpuAccess access) => access switch
    {
        CpuAccess.Read => (uint)Interop.Libc.DMA_BUF_SYNC_READ,
        CpuAccess.Write => (uint)Interop.Libc.DMA_BUF_SYNC_WRITE,
        CpuAccess.ReadWrite => (uint)Interop.Libc.DMA_BUF_SYNC_RW,
        _ => throw new ArgumentException($"CPU access must be Read, Write or ReadWrite (got {access}).", nameof(access)),
    };

    private static LinuxBuffer RequireDmaBuf(DmaBufHandle handle, string what)
    {
        LinuxBuffer linux = handle.Buffer.GetLinuxBuffer();
        if (linux.Kind != LinuxBufferKind.DmaBuf)
        {
            throw new NotSupportedException($"Cannot {what} {handle.Buffer}: it is a memfd, which has no kernel fences.");
        }

        return linux;
    }

    private static string PendingFences(DmaBufHandle handle, CpuAccess access)
    {
        try
        {
            using KernelSyncFile pending = ExportSyncFile(handle, access);
            IReadOnlyList<KernelFenceInfo> fences = [.. pending.Fences.Where(f => f.Status == 0)];
            return fences.Count == 0
                ? "none pending any more (they signaled as the wait ended)"
                : $"{fences.Count} pending ({string.Join("; ", fences.Select(KernelSyncFile.Describe))})";
        }
        catch (LinuxErrorException e)
        {
            return $"which ones is unknown (DMA_BUF_IOCTL_EXPORT_SYNC_FILE failed: {e.ErrnoName})";
        }
    }
}

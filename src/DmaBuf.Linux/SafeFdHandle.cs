// Ownership: a SafeFdHandle owns one file descriptor and closes it exactly once, when the last user of the handle is
// done (SafeHandle counts the native calls in flight). Every interop call that creates a descriptor returns one, so a
// descriptor can only leak if a SafeFdHandle is never disposed.
using System.Runtime.InteropServices;

namespace DmaBuf.Linux;

/// <summary>An owned Linux file descriptor: memfd, dma-buf, device node or socket.</summary>
/// <remarks>
/// <see cref="ReleaseHandle"/> closes the descriptor once and never retries on <c>EINTR</c>: on Linux the descriptor is
/// gone even when <c>close</c> reports <c>EINTR</c>, and a retry could close a number another thread has just been
/// given. Pass the handle, not its number, to anything that keeps a descriptor: the number is reused by the kernel.
/// </remarks>
public sealed class SafeFdHandle : SafeHandle
{
    /// <summary>Creates an invalid handle; the interop marshaller fills it in.</summary>
    public SafeFdHandle()
        : base(new IntPtr(-1), ownsHandle: true)
    {
    }

    /// <summary>Takes ownership of <paramref name="fd"/>.</summary>
    /// <param name="fd">An open descriptor.</param>
    /// <param name="ownsHandle">Whether disposing the handle closes the descriptor.</param>
    public SafeFdHandle(int fd, bool ownsHandle = true)
        : base(new IntPtr(-1), ownsHandle) => SetHandle(fd);

    /// <inheritdoc/>
    public override bool IsInvalid => handle.ToInt64() < 0;

    /// <summary>The descriptor number, for logs and for handing to a child; the handle still owns it.</summary>
    /// <exception cref="ObjectDisposedException">The handle was closed.</exception>
    public int Number
    {
        get
        {
            ObjectDisposedException.ThrowIf(IsClosed, this);
            return (int)handle;
        }
    }

    /// <inheritdoc/>
    protected override bool ReleaseHandle()
    {
        // Once only, whatever close says: see the remarks.
        _ = Interop.Libc.close((int)handle);
        return true;
    }
}

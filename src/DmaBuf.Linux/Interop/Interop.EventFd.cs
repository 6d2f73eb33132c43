using System.Runtime.InteropServices;
using DmaBuf.Linux;

internal static partial class Interop
{
    internal static partial class Libc
    {
        // <sys/eventfd.h>
        internal const int EFD_CLOEXEC = 0x80000;
        internal const int EFD_NONBLOCK = 0x800;

        [LibraryImport(Libraries.Libc, SetLastError = true)]
        private static partial int eventfd(uint initval, int flags);

        [LibraryImport(Libraries.Libc, EntryPoint = "read", SetLastError = true)]
        private static unsafe partial nint read_native(SafeFdHandle fd, void* buf, nuint count);

        [LibraryImport(Libraries.Libc, EntryPoint = "write", SetLastError = true)]
        private static unsafe partial nint write_native(SafeFdHandle fd, void* buf, nuint count);

        /// <summary>A non-blocking, close-on-exec eventfd with counter 0.</summary>
        internal static SafeFdHandle CreateEventFd() => CheckFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), "eventfd");

        /// <summary>Adds 1 to an eventfd's counter; a full counter (<c>EAGAIN</c>) already means "wake up". Never blocks.</summary>
        /// <returns>False when the write failed otherwise (the descriptor is not an eventfd any more, say).</returns>
        internal static unsafe bool SignalEventFd(SafeFdHandle fd)
        {
            ulong one = 1;
            while (write_native(fd, &one, sizeof(ulong)) < 0)
            {
                int errno = LastErrno;
                if (errno == EINTR)
                {
                    continue;
                }

                return errno == EAGAIN;
            }

            return true;
        }

        /// <summary>Resets an eventfd's counter to 0 (one non-blocking read); nothing pending is fine.</summary>
        internal static unsafe void DrainEventFd(SafeFdHandle fd)
        {
            ulong value;
            while (read_native(fd, &value, sizeof(ulong)) < 0 && LastErrno == EINTR)
            {
            }
        }
    }
}

using System.Runtime.InteropServices;
using DmaBuf.Linux;

internal static partial class Interop
{
    internal static partial class Libc
    {
        // <asm-generic/fcntl.h>
        internal const int O_RDONLY = 0;
        internal const int O_RDWR = 2;
        internal const int O_NONBLOCK = 0x800;
        internal const int O_CLOEXEC = 0x80000;
        internal const int O_ACCMODE = 3;
        internal const int F_GETFD = 1;
        internal const int F_GETFL = 3;
        internal const int F_DUPFD_CLOEXEC = 1030;
        internal const int FD_CLOEXEC = 1;

        // <poll.h>
        internal const short POLLIN = 0x1;
        internal const short POLLOUT = 0x4;
        internal const short POLLRDHUP = 0x2000;
        internal const short POLLERR = 0x8;
        internal const short POLLHUP = 0x10;

        [StructLayout(LayoutKind.Sequential)]
        internal struct pollfd
        {
            public int fd;
            public short events;
            public short revents;
        }

        /// <summary>Closes a descriptor. Only <see cref="SafeFdHandle.ReleaseHandle"/> calls it.</summary>
        [LibraryImport(Libraries.Libc, SetLastError = true)]
        internal static partial int close(int fd);

        [LibraryImport(Libraries.Libc, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
        internal static partial int open(string pathname, int flags, int mode);

        [LibraryImport(Libraries.Libc, SetLastError = true)]
        internal static unsafe partial int pipe2(int* pipefd, int flags);

        [LibraryImport(Libraries.Libc, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
        internal static unsafe partial nint readlink(string pathname, byte* buf, nuint bufsiz);

        [LibraryImport(Libraries.Libc, SetLastError = true)]
        internal static unsafe partial int poll(pollfd* fds, nuint nfds, int timeout);

        [LibraryImport(Libraries.Libc)]
        internal static partial uint geteuid();

        /// <summary>Opens <paramref name="path"/> read-write, close-on-exec.</summary>
        internal static SafeFdHandle OpenReadWrite(string path) =>
            CheckFd(open(path, O_RDWR | O_CLOEXEC, 0), "open", path);

        /// <summary>A close-on-exec duplicate of <paramref name="fd"/> (<c>F_DUPFD_CLOEXEC</c>): another number, the same file.</summary>
        internal static SafeFdHandle Duplicate(SafeFdHandle fd) =>
            CheckFd(Faults.Fail("fcntl(F_DUPFD_CLOEXEC)") ? -1 : fcntl(fd, F_DUPFD_CLOEXEC, 0), "fcntl(F_DUPFD_CLOEXEC)");

        /// <summary>Makes a pipe (used by tests to offer a peer an fd that is not a buffer).</summary>
        internal static unsafe (SafeFdHandle Read, SafeFdHandle Write) Pipe()
        {
            int* fds = stackalloc int[2];
            Check(pipe2(fds, O_CLOEXEC), "pipe2");
            return (new SafeFdHandle(fds[0]), new SafeFdHandle(fds[1]));
        }

        /// <summary>The target of the link <c>/proc/self/fd/N</c> for <paramref name="fd"/>, e.g. <c>/memfd:frame (deleted)</c>.</summary>
        internal static unsafe string FdLinkTarget(SafeFdHandle fd)
        {
            bool added = false;
            try
            {
                fd.DangerousAddRef(ref added);
                string path = "/proc/self/fd/" + fd.DangerousGetHandle().ToString(System.Globalization.CultureInfo.InvariantCulture);
                byte* buffer = stackalloc byte[512];
                nint n = Check(readlink(path, buffer, 512), "readlink", path);
                return System.Text.Encoding.UTF8.GetString(buffer, (int)n);
            }
            finally
            {
                if (added)
                {
                    fd.DangerousRelease();
                }
            }
        }

        /// <summary>
        /// Waits up to <paramref name="timeoutMs"/> (-1: forever) for <paramref name="events"/> on <paramref name="fd"/>
        /// and returns what happened (<c>revents</c>, which may also hold POLLERR or POLLHUP), 0 on timeout. Retries on
        /// EINTR with the full timeout.
        /// </summary>
        internal static unsafe short Poll(SafeFdHandle fd, short events, int timeoutMs)
        {
            bool added = false;
            try
            {
                fd.DangerousAddRef(ref added);
                var p = new pollfd { fd = (int)fd.DangerousGetHandle(), events = events };
                while (true)
                {
                    int r = poll(&p, 1, timeoutMs);
                    if (r >= 0)
                    {
                        return r > 0 ? p.revents : (short)0;
                    }

                    int errno = LastErrno;
                    if (errno != EINTR)
                    {
                        throw GetExceptionForErrno(errno, "poll");
                    }
                }
            }
            finally
            {
                if (added)
                {
                    fd.DangerousRelease();
                }
            }
        }

        /// <summary>
        /// Waits up to <paramref name="timeoutMs"/> (-1: forever) until one of <paramref name="fds"/> is readable (or hung
        /// up) and returns the lowest index of those that are, -1 on timeout. Retries on EINTR with the full timeout.
        /// </summary>
        internal static unsafe int PollAnyReadable(IReadOnlyList<SafeFdHandle> fds, int timeoutMs)
        {
            int n = fds.Count;
            pollfd* p = stackalloc pollfd[n];
            int added = 0;
            try
            {
                for (; added < n; added++)
                {
                    bool ok = false;
                    fds[added].DangerousAddRef(ref ok);
                    p[added] = new pollfd { fd = (int)fds[added].DangerousGetHandle(), events = POLLIN };
                }

                while (true)
                {
                    int r = poll(p, (nuint)n, timeoutMs);
                    if (r == 0)
                    {
                        return -1;
                    }

                    if (r > 0)
                    {
                        for (int i = 0; i < n; i++)
                        {
                            if (p[i].revents != 0)
                            {
                                return i;
                            }
                        }
                    }

                    int errno = LastErrno;
                    if (r < 0 && errno != EINTR)
                    {
                        throw GetExceptionForErrno(errno, "poll");
                    }
                }
            }
            finally
            {
                for (int i = 0; i < added; i++)
                {
                    fds[i].DangerousRelease();
                }
            }
        }

        /// <summary>
        /// Waits until <paramref name="fd"/> is readable (or hung up) or <paramref name="timeoutMs"/> passes (-1: forever).
        /// Returns false on timeout. Retries on EINTR with the full timeout (callers' timeouts are safety nets, not clocks).
        /// </summary>
        internal static bool PollReadable(SafeFdHandle fd, int timeoutMs) => Poll(fd, POLLIN, timeoutMs) != 0;
    }
}

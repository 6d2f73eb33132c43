using System.Runtime.InteropServices;
using DmaBuf.Linux;

internal static partial class Interop
{
    internal static partial class Libc
    {
        // <linux/memfd.h>
        internal const uint MFD_CLOEXEC = 0x1;
        internal const uint MFD_ALLOW_SEALING = 0x2;

        // <linux/fcntl.h>: F_LINUX_SPECIFIC_BASE (1024) + 9 and + 10
        internal const int F_ADD_SEALS = 1033;
        internal const int F_GET_SEALS = 1034;
        internal const int F_SEAL_SEAL = 0x1;
        internal const int F_SEAL_SHRINK = 0x2;
        internal const int F_SEAL_GROW = 0x4;
        internal const int F_SEAL_WRITE = 0x8;

        [LibraryImport(Libraries.Libc, EntryPoint = "memfd_create", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
        private static partial int memfd_create_native(string name, uint flags);

        /// <summary><c>memfd_create</c>, through the errno seam (<see cref="Faults"/>).</summary>
        internal static int memfd_create(string name, uint flags) =>
            Faults.Fail("memfd_create") ? -1 : memfd_create_native(name, flags);

        [LibraryImport(Libraries.Libc, SetLastError = true)]
        internal static partial int ftruncate(SafeFdHandle fd, long length);

        /// <summary><c>fcntl</c> with an int argument; the C function is variadic, which LP64 ABIs pass as a plain int.</summary>
        [LibraryImport(Libraries.Libc, SetLastError = true)]
        internal static partial int fcntl(SafeFdHandle fd, int cmd, int arg);

        /// <summary>Creates a sealable, close-on-exec memfd of <paramref name="size"/> bytes (not yet sealed).</summary>
        internal static SafeFdHandle CreateMemfd(string name, long size)
        {
            SafeFdHandle fd = CheckFd(memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING), "memfd_create", name);
            try
            {
                while (ftruncate(fd, size) < 0)
                {
                    int errno = LastErrno;
                    if (errno != EINTR)
                    {
                        throw GetExceptionForErrno(errno, "ftruncate", $"{size} bytes");
                    }
                }

                return fd;
            }
            catch
            {
                fd.Dispose();
                throw;
            }
        }

        /// <summary>Adds <paramref name="seals"/> (<c>F_ADD_SEALS</c>).</summary>
        internal static void AddSeals(SafeFdHandle fd, int seals) => Check(fcntl(fd, F_ADD_SEALS, seals), "fcntl(F_ADD_SEALS)");

        /// <summary>The seals of <paramref name="fd"/>, or -1 with <paramref name="errno"/> set when it cannot have any.</summary>
        internal static int TryGetSeals(SafeFdHandle fd, out int errno)
        {
            int seals = Faults.Fail("fcntl(F_GET_SEALS)") ? -1 : fcntl(fd, F_GET_SEALS, 0);
            errno = seals < 0 ? LastErrno : 0;
            return seals;
        }
    }
}

using System.Runtime.InteropServices;
using DmaBuf.Linux;

internal static partial class Interop
{
    internal static partial class Libc
    {
        // <asm-generic/mman-common.h>, <linux/mman.h>
        internal const int PROT_READ = 0x1;
        internal const int PROT_WRITE = 0x2;
        internal const int MAP_SHARED = 0x01;
        internal const int MAP_POPULATE = 0x8000;

        [LibraryImport(Libraries.Libc, EntryPoint = "mmap", SetLastError = true)]
        private static unsafe partial void* mmap_native(void* addr, nuint length, int prot, int flags, SafeFdHandle fd, long offset);

        /// <summary><c>mmap</c>, through the errno seam (<see cref="Faults"/>).</summary>
        internal static unsafe void* mmap(void* addr, nuint length, int prot, int flags, SafeFdHandle fd, long offset) =>
            Faults.Fail("mmap") ? (void*)-1 : mmap_native(addr, length, prot, flags, fd, offset);

        [LibraryImport(Libraries.Libc, SetLastError = true)]
        internal static unsafe partial int munmap(void* addr, nuint length);

        /// <summary>
        /// Maps <paramref name="length"/> bytes of <paramref name="fd"/> shared and read-write; pre-faulted
        /// (<c>MAP_POPULATE</c>) when <paramref name="populate"/>. Never populate a peer's descriptor: a sparse memfd
        /// would become resident.
        /// </summary>
        internal static unsafe nint MapShared(SafeFdHandle fd, long length, bool populate)
        {
            int flags = MAP_SHARED | (populate ? MAP_POPULATE : 0);
            void* address = mmap(null, (nuint)length, PROT_READ | PROT_WRITE, flags, fd, 0);
            if (address == (void*)-1)
            {
                throw GetExceptionForErrno(LastErrno, "mmap", $"{length} bytes");
            }

            return (nint)address;
        }

        /// <summary>Unmaps a region returned by <see cref="MapShared"/>. Cannot fail for a region we mapped.</summary>
        internal static unsafe void Unmap(nint address, long length) =>
            Check(munmap((void*)address, (nuint)length), "munmap");
    }
}

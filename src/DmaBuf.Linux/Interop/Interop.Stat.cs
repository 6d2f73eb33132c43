using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using DmaBuf.Linux;

internal static partial class Interop
{
    internal static partial class Libc
    {
        // <sys/stat.h>
        internal const uint S_IFMT = 0xF000;
        internal const uint S_IFREG = 0x8000;
        internal const uint S_IFIFO = 0x1000;
        internal const uint S_IFSOCK = 0xC000;

        /// <summary>
        /// Where <c>struct stat</c> keeps the fields we read. The struct differs between architectures (x86-64 has a
        /// 64-bit <c>st_nlink</c> before <c>st_mode</c>; the generic layout of arm64 has a 32-bit one after it), so
        /// <see cref="fstat"/> fills a buffer of <see cref="StatBufferSize"/> bytes and we read it at these offsets.
        /// </summary>
        internal readonly record struct StatLayout(int SizeOf, int st_dev, int st_ino, int st_mode, int st_size)
        {
            /// <summary>x86-64: <c>arch/x86/include/uapi/asm/stat.h</c>.</summary>
            internal static readonly StatLayout X64 = new(144, 0, 8, 24, 48);

            /// <summary>arm64 and the other 64-bit generic ABIs: <c>include/uapi/asm-generic/stat.h</c>.</summary>
            internal static readonly StatLayout Generic64 = new(128, 0, 8, 16, 48);

            /// <summary>The layout of the running process's architecture.</summary>
            internal static StatLayout Current { get; } = RuntimeInformation.ProcessArchitecture switch
            {
                Architecture.X64 => X64,
                Architecture.Arm64 or Architecture.RiscV64 or Architecture.LoongArch64 => Generic64,
                Architecture a => throw new PlatformNotSupportedException($"struct stat layout of {a} is not known to DmaBuf.Linux."),
            };
        }

        /// <summary>Room for the largest <c>struct stat</c> we know, with margin.</summary>
        internal const int StatBufferSize = 256;

        /// <summary>The fields of <c>struct stat</c> that identify and size a buffer.</summary>
        internal readonly record struct FileStatus(ulong Device, ulong Inode, uint Mode, long Size)
        {
            internal bool IsRegularFile => (Mode & S_IFMT) == S_IFREG;

            internal uint FileType => Mode & S_IFMT;
        }

        // <linux/magic.h>: f_type of the file systems behind buffer descriptors
        internal const long TMPFS_MAGIC = 0x01021994;
        internal const long HUGETLBFS_MAGIC = 0x958458f6;
        internal const long DMA_BUF_MAGIC = 0x444d4142;

        /// <summary><c>offsetof(struct statfs, f_type)</c> on every 64-bit Linux ABI: the first word.</summary>
        internal const int StatfsTypeOffset = 0;

        [LibraryImport(Libraries.Libc, SetLastError = true)]
        internal static unsafe partial int fstat(SafeFdHandle fd, byte* statbuf);

        [LibraryImport(Libraries.Libc, SetLastError = true)]
        internal static unsafe partial int fstatfs(SafeFdHandle fd, byte* buf);

        /// <summary>The magic number of the file system <paramref name="fd"/> lives on (<c>statfs.f_type</c>).</summary>
        internal static unsafe long FileSystemType(SafeFdHandle fd)
        {
            byte* buffer = stackalloc byte[StatBufferSize];
            Check(fstatfs(fd, buffer), "fstatfs");
            return Unsafe.ReadUnaligned<long>(buffer + StatfsTypeOffset);
        }

        /// <summary><c>fstat</c>, reading the fields at the current architecture's offsets.</summary>
        internal static unsafe FileStatus FStat(SafeFdHandle fd)
        {
            byte* buffer = stackalloc byte[StatBufferSize];
            Check(Faults.Fail("fstat") ? -1 : fstat(fd, buffer), "fstat");
            StatLayout l = StatLayout.Current;
            return new FileStatus(
                Unsafe.ReadUnaligned<ulong>(buffer + l.st_dev),
                Unsafe.ReadUnaligned<ulong>(buffer + l.st_ino),
                Unsafe.ReadUnaligned<uint>(buffer + l.st_mode),
                Unsafe.ReadUnaligned<long>(buffer + l.st_size));
        }
    }
}

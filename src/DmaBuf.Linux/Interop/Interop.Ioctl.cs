using System.Runtime.InteropServices;
using DmaBuf.Linux;

internal static partial class Interop
{
    internal static partial class Libc
    {
        // <asm-generic/ioctl.h>: dir (2 bits) << 30 | size (14 bits) << 16 | type << 8 | nr
        private const uint _IOC_WRITE = 1;
        private const uint _IOC_READ = 2;
        private const int _IOC_NRSHIFT = 0;
        private const int _IOC_TYPESHIFT = 8;
        private const int _IOC_SIZESHIFT = 16;
        private const int _IOC_DIRSHIFT = 30;

        // <linux/dma-buf.h>
        internal const ulong DMA_BUF_SYNC_READ = 1 << 0;
        internal const ulong DMA_BUF_SYNC_WRITE = 2 << 0;
        internal const ulong DMA_BUF_SYNC_RW = DMA_BUF_SYNC_READ | DMA_BUF_SYNC_WRITE;
        internal const ulong DMA_BUF_SYNC_START = 0 << 2;
        internal const ulong DMA_BUF_SYNC_END = 1 << 2;
        internal const int DMA_BUF_NAME_LEN = 32;

        /// <summary><c>_IOW('b', 0, struct dma_buf_sync)</c>.</summary>
        internal const uint DMA_BUF_IOCTL_SYNC = (_IOC_WRITE << _IOC_DIRSHIFT) | (8u << _IOC_SIZESHIFT) | ((uint)'b' << _IOC_TYPESHIFT) | (0u << _IOC_NRSHIFT);

        /// <summary><c>_IOW('b', 1, __u64)</c>: the name setter as 64-bit user space encodes it (argument: a string pointer).</summary>
        internal const uint DMA_BUF_SET_NAME_B = (_IOC_WRITE << _IOC_DIRSHIFT) | (8u << _IOC_SIZESHIFT) | ((uint)'b' << _IOC_TYPESHIFT) | (1u << _IOC_NRSHIFT);

        // <linux/dma-heap.h>
        /// <summary><c>_IOWR('H', 0, struct dma_heap_allocation_data)</c>.</summary>
        internal const uint DMA_HEAP_IOCTL_ALLOC = ((_IOC_READ | _IOC_WRITE) << _IOC_DIRSHIFT) | (24u << _IOC_SIZESHIFT) | ((uint)'H' << _IOC_TYPESHIFT) | (0u << _IOC_NRSHIFT);

        // <linux/udmabuf.h>
        internal const uint UDMABUF_FLAGS_CLOEXEC = 0x01;

        /// <summary><c>_IOW('u', 0x42, struct udmabuf_create)</c>.</summary>
        internal const uint UDMABUF_CREATE = (_IOC_WRITE << _IOC_DIRSHIFT) | (24u << _IOC_SIZESHIFT) | ((uint)'u' << _IOC_TYPESHIFT) | (0x42u << _IOC_NRSHIFT);

        /// <summary><c>_IOW('u', 0x43, struct udmabuf_create_list)</c>: the header's size, the items follow it.</summary>
        internal const uint UDMABUF_CREATE_LIST = (_IOC_WRITE << _IOC_DIRSHIFT) | (8u << _IOC_SIZESHIFT) | ((uint)'u' << _IOC_TYPESHIFT) | (0x43u << _IOC_NRSHIFT);

        [StructLayout(LayoutKind.Sequential)]
        internal struct dma_buf_sync
        {
            public ulong flags;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct dma_heap_allocation_data
        {
            public ulong len;
            public uint fd;
            public uint fd_flags;
            public ulong heap_flags;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct udmabuf_create
        {
            public uint memfd;
            public uint flags;
            public ulong offset;
            public ulong size;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct udmabuf_create_item
        {
            public uint memfd;
            public uint __pad;
            public ulong offset;
            public ulong size;
        }

        /// <summary>The header of <c>UDMABUF_CREATE_LIST</c>'s argument; <c>count</c> items follow it.</summary>
        [StructLayout(LayoutKind.Sequential)]
        internal struct udmabuf_create_list
        {
            public uint flags;
            public uint count;
        }

        /// <summary><c>ioctl</c> with a pointer argument; <c>request</c> is an <c>unsigned long</c> in glibc.</summary>
        [LibraryImport(Libraries.Libc, EntryPoint = "ioctl", SetLastError = true)]
        private static unsafe partial int ioctl_native(SafeFdHandle fd, nuint request, void* arg);

        /// <summary><c>ioctl</c>, through the errno seam (<see cref="Faults"/>).</summary>
        internal static unsafe int ioctl(SafeFdHandle fd, nuint request, void* arg) =>
            Faults.Fail("ioctl") ? -1 : ioctl_native(fd, request, arg);

        /// <summary>
        /// <c>DMA_BUF_IOCTL_SYNC</c> with <paramref name="flags"/> as given: the kernel refuses flags with unknown bits or
        /// without a direction (EINVAL), and the exception names the flags it was given.
        /// </summary>
        internal static unsafe void DmaBufSync(SafeFdHandle fd, ulong flags)
        {
            var sync = new dma_buf_sync { flags = flags };
            Ioctl(fd, DMA_BUF_IOCTL_SYNC, &sync, "ioctl(DMA_BUF_IOCTL_SYNC)", $"flags 0x{flags:x}");
        }

        /// <summary>
        /// Runs an ioctl, retrying on EINTR and EAGAIN as the dma-buf documentation asks for SYNC. A failure names
        /// <paramref name="call"/> and, when given, <paramref name="detail"/> (what the call was working on).
        /// </summary>
        internal static unsafe int Ioctl(SafeFdHandle fd, uint request, void* arg, string call, string? detail = null)
        {
            while (true)
            {
                int r = ioctl(fd, request, arg);
                if (r >= 0)
                {
                    return r;
                }

                int errno = LastErrno;
                if (errno is not (EINTR or EAGAIN))
                {
                    throw GetExceptionForErrno(errno, call, detail);
                }
            }
        }
    }
}

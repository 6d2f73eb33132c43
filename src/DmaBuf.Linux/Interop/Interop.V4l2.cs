using System.Runtime.InteropServices;
using DmaBuf.Linux;

internal static partial class Interop
{
    internal static partial class Libc
    {
        // <linux/videodev2.h>: the V4L2 ioctl type is 'V'. Only what the single-planar capture queue needs.
        private const uint VIDIOC_BASE = 'V';

        /// <summary><c>_IOR('V', 0, struct v4l2_capability)</c>.</summary>
        internal const uint VIDIOC_QUERYCAP = (_IOC_READ << _IOC_DIRSHIFT) | (104u << _IOC_SIZESHIFT) | (VIDIOC_BASE << _IOC_TYPESHIFT) | (0u << _IOC_NRSHIFT);

        /// <summary><c>_IOWR('V', 2, struct v4l2_fmtdesc)</c>.</summary>
        internal const uint VIDIOC_ENUM_FMT = ((_IOC_READ | _IOC_WRITE) << _IOC_DIRSHIFT) | (64u << _IOC_SIZESHIFT) | (VIDIOC_BASE << _IOC_TYPESHIFT) | (2u << _IOC_NRSHIFT);

        /// <summary><c>_IOWR('V', 4, struct v4l2_format)</c>.</summary>
        internal const uint VIDIOC_G_FMT = ((_IOC_READ | _IOC_WRITE) << _IOC_DIRSHIFT) | (208u << _IOC_SIZESHIFT) | (VIDIOC_BASE << _IOC_TYPESHIFT) | (4u << _IOC_NRSHIFT);

        /// <summary><c>_IOWR('V', 5, struct v4l2_format)</c>.</summary>
        internal const uint VIDIOC_S_FMT = ((_IOC_READ | _IOC_WRITE) << _IOC_DIRSHIFT) | (208u << _IOC_SIZESHIFT) | (VIDIOC_BASE << _IOC_TYPESHIFT) | (5u << _IOC_NRSHIFT);

        /// <summary><c>_IOWR('V', 8, struct v4l2_requestbuffers)</c>.</summary>
        internal const uint VIDIOC_REQBUFS = ((_IOC_READ | _IOC_WRITE) << _IOC_DIRSHIFT) | (20u << _IOC_SIZESHIFT) | (VIDIOC_BASE << _IOC_TYPESHIFT) | (8u << _IOC_NRSHIFT);

        /// <summary><c>_IOWR('V', 9, struct v4l2_buffer)</c>.</summary>
        internal const uint VIDIOC_QUERYBUF = ((_IOC_READ | _IOC_WRITE) << _IOC_DIRSHIFT) | (88u << _IOC_SIZESHIFT) | (VIDIOC_BASE << _IOC_TYPESHIFT) | (9u << _IOC_NRSHIFT);

        /// <summary><c>_IOWR('V', 15, struct v4l2_buffer)</c>.</summary>
        internal const uint VIDIOC_QBUF = ((_IOC_READ | _IOC_WRITE) << _IOC_DIRSHIFT) | (88u << _IOC_SIZESHIFT) | (VIDIOC_BASE << _IOC_TYPESHIFT) | (15u << _IOC_NRSHIFT);

        /// <summary><c>_IOWR('V', 16, struct v4l2_exportbuffer)</c>.</summary>
        internal const uint VIDIOC_EXPBUF = ((_IOC_READ | _IOC_WRITE) << _IOC_DIRSHIFT) | (64u << _IOC_SIZESHIFT) | (VIDIOC_BASE << _IOC_TYPESHIFT) | (16u << _IOC_NRSHIFT);

        /// <summary><c>_IOWR('V', 17, struct v4l2_buffer)</c>.</summary>
        internal const uint VIDIOC_DQBUF = ((_IOC_READ | _IOC_WRITE) << _IOC_DIRSHIFT) | (88u << _IOC_SIZESHIFT) | (VIDIOC_BASE << _IOC_TYPESHIFT) | (17u << _IOC_NRSHIFT);

        /// <summary><c>_IOW('V', 18, int)</c>.</summary>
        internal const uint VIDIOC_STREAMON = (_IOC_WRITE << _IOC_DIRSHIFT) | (4u << _IOC_SIZESHIFT) | (VIDIOC_BASE << _IOC_TYPESHIFT) | (18u << _IOC_NRSHIFT);

        /// <summary><c>_IOW('V', 19, int)</c>.</summary>
        internal const uint VIDIOC_STREAMOFF = (_IOC_WRITE << _IOC_DIRSHIFT) | (4u << _IOC_SIZESHIFT) | (VIDIOC_BASE << _IOC_TYPESHIFT) | (19u << _IOC_NRSHIFT);

        // enum v4l2_buf_type, enum v4l2_memory
        internal const uint V4L2_BUF_TYPE_VIDEO_CAPTURE = 1;
        internal const uint V4L2_MEMORY_MMAP = 1;
        internal const uint V4L2_MEMORY_USERPTR = 2;
        internal const uint V4L2_MEMORY_OVERLAY = 3;
        internal const uint V4L2_MEMORY_DMABUF = 4;

        // struct v4l2_fmtdesc: flags
        internal const uint V4L2_FMT_FLAG_COMPRESSED = 0x0001;
        internal const uint V4L2_FMT_FLAG_EMULATED = 0x0002;

        // The V4L2_CAP_*, V4L2_FIELD_* and V4L2_BUF_FLAG_* values are the public enums V4l2Caps, V4l2Field and
        // V4l2BufferFlags (checked against the header member by member).

        /// <summary><c>v4l2_fourcc('Y', 'U', 'Y', 'V')</c>: packed 4:2:2, Y0 Cb Y1 Cr.</summary>
        internal const uint V4L2_PIX_FMT_YUYV = 'Y' | ('U' << 8) | ('Y' << 16) | ((uint)'V' << 24);

        [StructLayout(LayoutKind.Sequential)]
        internal unsafe struct v4l2_capability
        {
            public fixed byte driver[16];
            public fixed byte card[32];
            public fixed byte bus_info[32];
            public uint version;
            public uint capabilities;
            public uint device_caps;
            public fixed uint reserved[3];
        }

        [StructLayout(LayoutKind.Sequential)]
        internal unsafe struct v4l2_fmtdesc
        {
            public uint index;
            public uint type;
            public uint flags;
            public fixed byte description[32];
            public uint pixelformat;
            public uint mbus_code;
            public fixed uint reserved[3];
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct v4l2_pix_format
        {
            public uint width;
            public uint height;
            public uint pixelformat;
            public uint field;
            public uint bytesperline;
            public uint sizeimage;
            public uint colorspace;
            public uint priv;
            public uint flags;
            public uint ycbcr_enc; // a union with hsv_enc
            public uint quantization;
            public uint xfer_func;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct v4l2_format
        {
            public uint type;
            public fmt_union fmt;

            /// <summary>
            /// The union <c>fmt</c>: 200 bytes, aligned like a pointer because one member (<c>struct v4l2_window</c>)
            /// holds pointers, so it starts at offset 8 on 64-bit machines.
            /// </summary>
            [StructLayout(LayoutKind.Explicit, Size = 200)]
            internal unsafe struct fmt_union
            {
                [FieldOffset(0)]
                public v4l2_pix_format pix;

                [FieldOffset(0)]
                public fixed byte raw_data[200];

#pragma warning disable CS0169, IDE0051 // never read: it only gives the union a pointer's alignment
                [FieldOffset(0)]
                private nint _pointerAlignment;
#pragma warning restore CS0169, IDE0051
            }
        }

        [StructLayout(LayoutKind.Sequential)]
        internal unsafe struct v4l2_requestbuffers
        {
            public uint count;
            public uint type;
            public uint memory;
            public uint capabilities;
            public byte flags;
            public fixed byte reserved[3];
        }

        [StructLayout(LayoutKind.Sequential)]
        internal unsafe struct v4l2_timecode
        {
            public uint type;
            public uint flags;
            public byte frames;
            public byte seconds;
            public byte minutes;
            public byte hours;
            public fixed byte userbits[4];
        }

        /// <summary><c>struct timeval</c> (64-bit <c>time_t</c> and <c>suseconds_t</c>).</summary>
        [StructLayout(LayoutKind.Sequential)]
        internal struct timeval
        {
            public long tv_sec;
            public long tv_usec;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct v4l2_buffer
        {
            public uint index;
            public uint type;
            public uint bytesused;
            public uint flags;
            public uint field;
            public timeval timestamp;
            public v4l2_timecode timecode;
            public uint sequence;
            public uint memory;
            public m_union m;
            public uint length;
            public uint reserved2;
            public int request_fd; // a union with reserved

            /// <summary>The union <c>m</c>: where the memory is, by <c>memory</c>.</summary>
            [StructLayout(LayoutKind.Explicit)]
            internal unsafe struct m_union
            {
                [FieldOffset(0)]
                public uint offset;

                [FieldOffset(0)]
                public nuint userptr;

                [FieldOffset(0)]
                public void* planes;

                [FieldOffset(0)]
                public int fd;
            }
        }

        [StructLayout(LayoutKind.Sequential)]
        internal unsafe struct v4l2_exportbuffer
        {
            public uint type;
            public uint index;
            public uint plane;
            public uint flags;
            public int fd;
            public fixed uint reserved[11];
        }

        /// <summary>
        /// <c>VIDIOC_QUERYCAP</c>: what the node is. ENOTTY (or EINVAL from some drivers) means it is not a V4L2 node;
        /// <paramref name="path"/> goes into the message.
        /// </summary>
        internal static unsafe v4l2_capability V4l2QueryCap(SafeFdHandle fd, string path)
        {
            v4l2_capability cap;
            Ioctl(fd, VIDIOC_QUERYCAP, &cap, "ioctl(VIDIOC_QUERYCAP)", path);
            return cap;
        }

        /// <summary>The driver's name from <c>VIDIOC_QUERYCAP</c>, e.g. <c>vivid</c>.</summary>
        internal static unsafe string V4l2DriverName(SafeFdHandle fd, string path)
        {
            v4l2_capability cap = V4l2QueryCap(fd, path);
            return CString(cap.driver, 16);
        }

        /// <summary>A NUL-terminated UTF-8 string in a fixed array of <paramref name="capacity"/> bytes.</summary>
        internal static unsafe string CString(byte* s, int capacity)
        {
            var bytes = new ReadOnlySpan<byte>(s, capacity);
            int end = bytes.IndexOf((byte)0);
            return System.Text.Encoding.UTF8.GetString(end < 0 ? bytes : bytes[..end]);
        }

        /// <summary>
        /// An ioctl that reports its errno instead of throwing (EINTR is retried): for calls whose failure is an answer,
        /// such as <c>VIDIOC_DQBUF</c> on a non-blocking descriptor (EAGAIN: nothing done yet) or <c>VIDIOC_ENUM_FMT</c>
        /// (EINVAL: past the last format). Returns 0 or the errno.
        /// </summary>
        internal static unsafe int TryIoctl(SafeFdHandle fd, uint request, void* arg)
        {
            while (true)
            {
                if (ioctl(fd, request, arg) >= 0)
                {
                    return 0;
                }

                int errno = LastErrno;
                if (errno != EINTR)
                {
                    return errno;
                }
            }
        }
    }
}

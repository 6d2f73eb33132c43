using System.Runtime.InteropServices;
using DmaBuf.Linux;

internal static partial class Interop
{
    internal static partial class Libc
    {
        // <bits/socket.h>, <asm-generic/socket.h>
        internal const int AF_UNIX = 1;
        internal const int SOCK_STREAM = 1;
        internal const int SOCK_SEQPACKET = 5;
        internal const int SOCK_CLOEXEC = 0x80000;
        internal const int SOL_SOCKET = 1;
        internal const int SO_PEERCRED = 17;
        internal const int SCM_RIGHTS = 0x01;
        internal const int MSG_CTRUNC = 0x08;
        internal const int MSG_TRUNC = 0x20;
        internal const int MSG_DONTWAIT = 0x40;
        internal const int MSG_NOSIGNAL = 0x4000;
        internal const int MSG_CMSG_CLOEXEC = 0x40000000;
        internal const int SHUT_RDWR = 2;

        /// <summary><c>sizeof(((struct sockaddr_un *)0)-&gt;sun_path)</c>.</summary>
        internal const int SUN_PATH_MAX = 108;

        [StructLayout(LayoutKind.Sequential)]
        internal unsafe struct iovec
        {
            public void* iov_base;
            public nuint iov_len;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal unsafe struct msghdr
        {
            public void* msg_name;
            public uint msg_namelen;
            public iovec* msg_iov;
            public nuint msg_iovlen;
            public void* msg_control;
            public nuint msg_controllen;
            public int msg_flags;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct cmsghdr
        {
            public nuint cmsg_len;
            public int cmsg_level;
            public int cmsg_type;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct ucred
        {
            public int pid;
            public uint uid;
            public uint gid;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal unsafe struct sockaddr_un
        {
            public ushort sun_family;
            public fixed byte sun_path[SUN_PATH_MAX];
        }

        /// <summary><c>CMSG_ALIGN</c>.</summary>
        internal static int CMSG_ALIGN(int length) => (length + IntPtr.Size - 1) & ~(IntPtr.Size - 1);

        /// <summary><c>CMSG_SPACE</c>.</summary>
        internal static unsafe int CMSG_SPACE(int length) => CMSG_ALIGN(sizeof(cmsghdr)) + CMSG_ALIGN(length);

        /// <summary><c>CMSG_LEN</c>.</summary>
        internal static unsafe int CMSG_LEN(int length) => CMSG_ALIGN(sizeof(cmsghdr)) + length;

        /// <summary>Offset of the data in a control message (what <c>CMSG_DATA</c> adds).</summary>
        internal static unsafe int CMSG_DATA_OFFSET => CMSG_ALIGN(sizeof(cmsghdr));

        [LibraryImport(Libraries.Libc, SetLastError = true)]
        internal static unsafe partial int socketpair(int domain, int type, int protocol, int* sv);

        [LibraryImport(Libraries.Libc, SetLastError = true)]
        internal static partial int socket(int domain, int type, int protocol);

        [LibraryImport(Libraries.Libc, SetLastError = true)]
        internal static unsafe partial int bind(SafeFdHandle sockfd, sockaddr_un* addr, uint addrlen);

        [LibraryImport(Libraries.Libc, SetLastError = true)]
        internal static unsafe partial int connect(SafeFdHandle sockfd, sockaddr_un* addr, uint addrlen);

        [LibraryImport(Libraries.Libc, SetLastError = true)]
        internal static partial int listen(SafeFdHandle sockfd, int backlog);

        [LibraryImport(Libraries.Libc, SetLastError = true)]
        internal static unsafe partial int accept4(SafeFdHandle sockfd, void* addr, uint* addrlen, int flags);

        [LibraryImport(Libraries.Libc, EntryPoint = "sendmsg", SetLastError = true)]
        private static unsafe partial nint sendmsg_native(SafeFdHandle sockfd, msghdr* msg, int flags);

        [LibraryImport(Libraries.Libc, EntryPoint = "recvmsg", SetLastError = true)]
        private static unsafe partial nint recvmsg_native(SafeFdHandle sockfd, msghdr* msg, int flags);

        /// <summary><c>sendmsg</c>, through the errno seam (<see cref="Faults"/>).</summary>
        internal static unsafe nint sendmsg(SafeFdHandle sockfd, msghdr* msg, int flags) =>
            Faults.Fail("sendmsg") ? -1 : sendmsg_native(sockfd, msg, flags);

        /// <summary><c>recvmsg</c>, through the errno seam (<see cref="Faults"/>).</summary>
        internal static unsafe nint recvmsg(SafeFdHandle sockfd, msghdr* msg, int flags) =>
            Faults.Fail("recvmsg") ? -1 : recvmsg_native(sockfd, msg, flags);

        [LibraryImport(Libraries.Libc, SetLastError = true)]
        internal static unsafe partial int getsockopt(SafeFdHandle sockfd, int level, int optname, void* optval, uint* optlen);

        [LibraryImport(Libraries.Libc, SetLastError = true)]
        internal static partial int shutdown(SafeFdHandle sockfd, int how);

        /// <summary>A connected pair of close-on-exec Unix sockets of <paramref name="type"/>.</summary>
        internal static unsafe (SafeFdHandle First, SafeFdHandle Second) SocketPair(int type)
        {
            int* sv = stackalloc int[2];
            Check(socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv), "socketpair");
            return (new SafeFdHandle(sv[0]), new SafeFdHandle(sv[1]));
        }

        /// <summary>A close-on-exec Unix socket of <paramref name="type"/>.</summary>
        internal static SafeFdHandle UnixSocket(int type) => CheckFd(socket(AF_UNIX, type | SOCK_CLOEXEC, 0), "socket");

        /// <summary>Accepts a connection (close-on-exec), retrying on EINTR.</summary>
        internal static unsafe SafeFdHandle Accept(SafeFdHandle listener, string name)
        {
            while (true)
            {
                int fd = accept4(listener, null, null, SOCK_CLOEXEC);
                if (fd >= 0)
                {
                    return new SafeFdHandle(fd);
                }

                int errno = LastErrno;
                if (errno != EINTR)
                {
                    throw GetExceptionForErrno(errno, "accept4", name);
                }
            }
        }

        /// <summary>
        /// Fills an abstract-namespace address (<c>sun_path[0] == 0</c>, the name after it, no terminator) and returns the
        /// address length to pass to bind/connect.
        /// </summary>
        internal static unsafe uint AbstractAddress(string name, out sockaddr_un address)
        {
            byte[] bytes = System.Text.Encoding.UTF8.GetBytes(name);
            if (bytes.Length == 0 || bytes.Length > SUN_PATH_MAX - 1)
            {
                throw new ArgumentException($"An abstract socket name takes 1 to {SUN_PATH_MAX - 1} UTF-8 bytes; '{name}' has {bytes.Length}.", nameof(name));
            }

            address = default;
            address.sun_family = AF_UNIX;
            fixed (byte* path = address.sun_path)
            {
                path[0] = 0;
                bytes.CopyTo(new Span<byte>(path + 1, SUN_PATH_MAX - 1));
            }

            return (uint)(sizeof(ushort) + 1 + bytes.Length);
        }

        /// <summary>The credentials of the process at the other end of a connected Unix socket (<c>SO_PEERCRED</c>).</summary>
        internal static unsafe ucred PeerCredentials(SafeFdHandle socket)
        {
            ucred cred;
            uint length = (uint)sizeof(ucred);
            Check(getsockopt(socket, SOL_SOCKET, SO_PEERCRED, &cred, &length), "getsockopt(SO_PEERCRED)");
            return cred;
        }
    }
}

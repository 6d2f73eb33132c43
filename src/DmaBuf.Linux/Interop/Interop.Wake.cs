using System.Runtime.InteropServices;
using DmaBuf.Linux;

internal static partial class Interop
{
    internal static partial class Libc
    {
        // The control ring's wake-ups: a Unix datagram socket pair per side. Whether a read or write of an eventfd
        // waits is the O_NONBLOCK flag of its open file description, which a process the descriptor was passed to
        // shares and may clear (F_SETFL); a peer could then make our signal wait on its full counter, or our drain wait
        // on a counter it emptied first. A socket's send and receive take MSG_DONTWAIT per call, whatever the flags.
        internal const int SOCK_DGRAM = 2;
        internal const int SO_TYPE = 3;
        internal const int SO_DOMAIN = 39;

        /// <summary>At most this many pending wake-ups are read by one <see cref="DrainWake"/>.</summary>
        private const int MaxDrainedWakes = 64;

        [LibraryImport(Libraries.Libc, EntryPoint = "send", SetLastError = true)]
        private static unsafe partial nint send_native(SafeFdHandle sockfd, void* buf, nuint len, int flags);

        [LibraryImport(Libraries.Libc, EntryPoint = "recv", SetLastError = true)]
        private static unsafe partial nint recv_native(SafeFdHandle sockfd, void* buf, nuint len, int flags);

        /// <summary>
        /// A connected pair of close-on-exec Unix datagram sockets: the side that waits keeps <c>Wait</c> and passes
        /// <c>Signal</c> to the peer, which wakes it by sending on it.
        /// </summary>
        internal static (SafeFdHandle Wait, SafeFdHandle Signal) CreateWakePair() => SocketPair(SOCK_DGRAM);

        /// <summary>Sends one wake-up on <paramref name="fd"/>; never waits. A full queue (<c>EAGAIN</c>) already means "wake up".</summary>
        /// <returns>False when the send failed otherwise (the peer closed its end, say).</returns>
        internal static unsafe bool SignalWake(SafeFdHandle fd)
        {
            byte one = 1;
            while (send_native(fd, &one, 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
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

        /// <summary>Reads the wake-ups pending on <paramref name="fd"/> (at most <see cref="MaxDrainedWakes"/>); never waits.</summary>
        internal static unsafe void DrainWake(SafeFdHandle fd)
        {
            byte* data = stackalloc byte[8];
            for (int i = 0; i < MaxDrainedWakes; i++)
            {
                if (recv_native(fd, data, 8, MSG_DONTWAIT) < 0 && LastErrno != EINTR)
                {
                    return; // EAGAIN: none left (or the socket broke: nothing to drain)
                }
            }
        }

        /// <summary>Whether <paramref name="fd"/> is a Unix datagram socket (what <see cref="SignalWake"/> needs).</summary>
        internal static unsafe bool IsUnixDatagramSocket(SafeFdHandle fd)
        {
            int value = 0;
            uint length = sizeof(int);
            if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &value, &length) != 0 || value != AF_UNIX)
            {
                return false;
            }

            length = sizeof(int);
            return getsockopt(fd, SOL_SOCKET, SO_TYPE, &value, &length) == 0 && value == SOCK_DGRAM;
        }
    }
}

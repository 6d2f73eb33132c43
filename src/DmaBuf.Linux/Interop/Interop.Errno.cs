internal static partial class Interop
{
    internal static partial class Libc
    {
        // <asm-generic/errno-base.h>, <asm-generic/errno.h>
        internal const int EPERM = 1;
        internal const int ENOENT = 2;
        internal const int EINTR = 4;
        internal const int EIO = 5;
        internal const int EBADF = 9;
        internal const int EAGAIN = 11;
        internal const int ENOMEM = 12;
        internal const int EACCES = 13;
        internal const int EFAULT = 14;
        internal const int EBUSY = 16;
        internal const int EEXIST = 17;
        internal const int ENODEV = 19;
        internal const int EINVAL = 22;
        internal const int ENFILE = 23;
        internal const int EMFILE = 24;
        internal const int ENOTTY = 25;
        internal const int EFBIG = 27;
        internal const int ENOSPC = 28;
        internal const int EPIPE = 32;
        internal const int ENOSYS = 38;
        internal const int ENOTSOCK = 88;
        internal const int EMSGSIZE = 90;
        internal const int EOPNOTSUPP = 95;
        internal const int EADDRINUSE = 98;
        internal const int ECONNRESET = 104;
        internal const int ENOTCONN = 107;
        internal const int EBADFD = 77;
        internal const int ETIMEDOUT = 110;
        internal const int ECONNREFUSED = 111;

        /// <summary>The symbolic name of <paramref name="errno"/>, or its number when it is not one we name.</summary>
        internal static string ErrnoName(int errno) => errno switch
        {
            EPERM => "EPERM",
            ENOENT => "ENOENT",
            EINTR => "EINTR",
            EIO => "EIO",
            EBADF => "EBADF",
            EAGAIN => "EAGAIN",
            ENOMEM => "ENOMEM",
            EACCES => "EACCES",
            EFAULT => "EFAULT",
            EBUSY => "EBUSY",
            EEXIST => "EEXIST",
            ENODEV => "ENODEV",
            EINVAL => "EINVAL",
            ENFILE => "ENFILE",
            EMFILE => "EMFILE",
            ENOTTY => "ENOTTY",
            EFBIG => "EFBIG",
            ENOSPC => "ENOSPC",
            EPIPE => "EPIPE",
            ENOSYS => "ENOSYS",
            ENOTSOCK => "ENOTSOCK",
            EMSGSIZE => "EMSGSIZE",
            EOPNOTSUPP => "EOPNOTSUPP",
            EADDRINUSE => "EADDRINUSE",
            ECONNRESET => "ECONNRESET",
            ENOTCONN => "ENOTCONN",
            EBADFD => "EBADFD",
            ETIMEDOUT => "ETIMEDOUT",
            ECONNREFUSED => "ECONNREFUSED",
            _ => "errno " + errno.ToString(System.Globalization.CultureInfo.InvariantCulture),
        };
    }
}

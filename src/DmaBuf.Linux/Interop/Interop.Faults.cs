using System.Runtime.InteropServices;

internal static partial class Interop
{
    /// <summary>
    /// The errno seam: tests make a native call fail (EMFILE, ENOMEM, EINTR, EAGAIN, ...) without the kernel's help. The
    /// wrappers of the calls that create, map or pass descriptors (<c>memfd_create</c>, <c>mmap</c>, <c>sendmsg</c>,
    /// <c>recvmsg</c>, <c>fcntl(F_DUPFD_CLOEXEC)</c>, <c>ioctl</c>) and of the reads an import's checks are ordered by
    /// (<c>fstat</c>, <c>fcntl(F_GET_SEALS)</c>) ask the hook first. It gets the call's name and returns the errno to fail
    /// with, or 0 to let the call run; it may also act (a test's hostile peer changes a memfd between two checks).
    /// </summary>
    /// <remarks>One hook for the process: the Linux tests run one at a time. Null in production: one volatile read.</remarks>
    internal static class Faults
    {
        private static volatile Func<string, int>? s_hook;

        /// <summary>Installs <paramref name="hook"/> until the returned scope is disposed.</summary>
        internal static Scope Inject(Func<string, int> hook)
        {
            ArgumentNullException.ThrowIfNull(hook);
            s_hook = hook;
            return default;
        }

        /// <summary>
        /// Whether the hook fails <paramref name="call"/>; if so the errno it chose is the last P/Invoke error, as if the
        /// call had failed, and the wrapper returns its failure value without calling.
        /// </summary>
        internal static bool Fail(string call)
        {
            Func<string, int>? hook = s_hook;
            if (hook is null)
            {
                return false;
            }

            int errno = hook(call);
            if (errno == 0)
            {
                return false;
            }

            Marshal.SetLastPInvokeError(errno);
            return true;
        }

        /// <summary>Removes the hook.</summary>
        internal readonly struct Scope : IDisposable
        {
            public void Dispose() => s_hook = null;
        }
    }
}

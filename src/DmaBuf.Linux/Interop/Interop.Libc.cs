using System.Runtime.InteropServices;
using DmaBuf.Linux;

/// <summary>
/// Native calls, nested by library. Names of functions, structs, fields and constants are those of the C headers, so a
/// reader can check each against its man page; <c>InteropLayoutTests</c> checks them against the machine's headers.
/// </summary>
internal static partial class Interop
{
    /// <summary>Library names for <see cref="LibraryImportAttribute"/>.</summary>
    internal static class Libraries
    {
        /// <summary>glibc; the runtime maps "libc" to the C library of the platform.</summary>
        internal const string Libc = "libc";
    }

    /// <summary>The C library (glibc).</summary>
    internal static partial class Libc
    {
    }

    /// <summary>
    /// The one place that turns a failed call's errno into an exception: <see cref="LinuxErrorException"/> carrying the
    /// errno and the call's name. Every wrapper that fails ends up here.
    /// </summary>
    internal static LinuxErrorException GetExceptionForErrno(int errno, string call, string? detail = null) =>
        new(errno, call, detail);

    /// <summary>The errno of the last <c>SetLastError = true</c> call on this thread.</summary>
    internal static int LastErrno => Marshal.GetLastPInvokeError();

    /// <summary>Throws for the last errno if <paramref name="result"/> is negative; returns it otherwise.</summary>
    internal static int Check(int result, string call, string? detail = null) =>
        result < 0 ? throw GetExceptionForErrno(LastErrno, call, detail) : result;

    /// <summary>Throws for the last errno if <paramref name="result"/> is negative; returns it otherwise.</summary>
    internal static nint Check(nint result, string call, string? detail = null) =>
        result < 0 ? throw GetExceptionForErrno(LastErrno, call, detail) : result;

    /// <summary>
    /// Wraps the descriptor a call returned in a <see cref="SafeFdHandle"/> at once, or throws for the last errno. The
    /// descriptor-creating imports return <c>int</c>, not a SafeHandle: the marshaller would read a SafeHandle from the
    /// whole pointer-sized return register, whose upper half the ABI leaves undefined for a C <c>int</c>, and a failed
    /// call's -1 would then look like a valid descriptor.
    /// </summary>
    internal static SafeFdHandle CheckFd(int result, string call, string? detail = null) =>
        result < 0 ? throw GetExceptionForErrno(LastErrno, call, detail) : new SafeFdHandle(result);
}

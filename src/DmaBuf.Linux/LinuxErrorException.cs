namespace DmaBuf.Linux;

/// <summary>A Linux call failed. Carries the errno and the name of the call; made in one place for every call.</summary>
public sealed class LinuxErrorException : IOException
{
    /// <summary>Creates the exception for <paramref name="errno"/> returned by <paramref name="call"/>.</summary>
    /// <param name="errno">The error number.</param>
    /// <param name="call">The call that failed, e.g. <c>memfd_create</c> or <c>fcntl(F_ADD_SEALS)</c>.</param>
    /// <param name="detail">What the call was working on (a path, a size), for the message.</param>
    public LinuxErrorException(int errno, string call, string? detail = null)
        : base(Format(errno, call, detail))
    {
        Errno = errno;
        Call = call;
        HResult = errno;
    }

    /// <summary>Creates the exception with a message and no errno.</summary>
    public LinuxErrorException(string message)
        : base(message) => Call = "";

    /// <summary>Creates the exception with a message and inner exception and no errno.</summary>
    public LinuxErrorException(string message, Exception inner)
        : base(message, inner) => Call = "";

    /// <summary>Creates the exception with no message.</summary>
    public LinuxErrorException() => Call = "";

    /// <summary>The errno the call returned (e.g. 22 for <c>EINVAL</c>).</summary>
    public int Errno { get; }

    /// <summary>The symbolic name of <see cref="Errno"/>, e.g. <c>EINVAL</c>.</summary>
    public string ErrnoName => Interop.Libc.ErrnoName(Errno);

    /// <summary>The call that failed.</summary>
    public string Call { get; }

    private static string Format(int errno, string call, string? detail) =>
        $"{call}{(detail is null ? "" : " (" + detail + ")")} failed: {Interop.Libc.ErrnoName(errno)}, " +
        $"{System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(errno)}.";
}

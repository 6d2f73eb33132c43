using System.Runtime.InteropServices;

internal static partial class Interop
{
    internal static partial class Libc
    {
        // A blocking ring receive sleeps on a futex on its sleeping word in the shared region: FUTEX_WAKE never waits,
        // whatever the peer does to the page, and wakes the sleeper as an ordinary wake-up. A Unix-socket send wakes its
        // reader as a "synchronous" one (the kernel takes it that the sender is about to sleep and, when the sender's
        // CPU runs nothing else, queues the reader there), so a sender that goes on spinning for its answer holds the
        // woken reader off its CPU for as long as it spins. The futexes are shared (no FUTEX_PRIVATE_FLAG): the two
        // processes map the same memfd, and the kernel keys the futex by the file's page, not by the address.
        private const int FUTEX_WAIT = 0;
        private const int FUTEX_WAKE = 1;

        /// <summary>The futex system call's number on this architecture.</summary>
        private static readonly nint s_futexSyscall = RuntimeInformation.ProcessArchitecture switch
        {
            Architecture.X64 => 202,
            Architecture.Arm64 => 98,
            Architecture.X86 => 240,
            Architecture.Arm => 240,
            Architecture.RiscV64 => 98,
            Architecture.LoongArch64 => 98,
            _ => -1,
        };

        [LibraryImport(Libraries.Libc, EntryPoint = "syscall", SetLastError = true)]
        private static unsafe partial nint syscall_futex(nint number, int* address, int operation, int value, Timespec* timeout, nint address2, int value3);

        /// <summary>Whether this architecture's futex call is known here (else blocking ring waits sleep on the wake-up socket).</summary>
        internal static bool HasFutex => s_futexSyscall >= 0;

        /// <summary>
        /// Sleeps while <paramref name="address"/> holds <paramref name="expected"/>, for at most
        /// <paramref name="milliseconds"/>, until a <see cref="FutexWake"/> on it.
        /// </summary>
        internal static unsafe FutexOutcome FutexWait(int* address, int expected, int milliseconds)
        {
            var timeout = new Timespec { Seconds = milliseconds / 1000, Nanoseconds = milliseconds % 1000 * 1_000_000L };
            if (syscall_futex(s_futexSyscall, address, FUTEX_WAIT, expected, &timeout, 0, 0) == 0)
            {
                return FutexOutcome.Woken;
            }

            return LastErrno switch
            {
                EAGAIN => FutexOutcome.Changed,
                ETIMEDOUT => FutexOutcome.TimedOut,
                _ => FutexOutcome.Woken, // EINTR: as a spurious wake; the caller looks again either way
            };
        }

        /// <summary>Wakes whoever sleeps on <paramref name="address"/> (<see cref="FutexWait"/>); never waits.</summary>
        internal static unsafe void FutexWake(int* address) => _ = syscall_futex(s_futexSyscall, address, FUTEX_WAKE, int.MaxValue, null, 0, 0);

        [StructLayout(LayoutKind.Sequential)]
        private struct Timespec
        {
            public long Seconds;
            public long Nanoseconds;
        }
    }
}

/// <summary>How a <see cref="Interop.Libc.FutexWait"/> ended.</summary>
internal enum FutexOutcome
{
    /// <summary>Woken (or interrupted).</summary>
    Woken,

    /// <summary>The word held something else already: it changed before the sleep began.</summary>
    Changed,

    /// <summary>The time ran out.</summary>
    TimedOut,
}

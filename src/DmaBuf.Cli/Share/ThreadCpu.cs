using System.Runtime.InteropServices;

namespace DmaBuf.Cli;

/// <summary>The calling thread's CPU time (<c>clock_gettime(CLOCK_THREAD_CPUTIME_ID)</c>).</summary>
internal static partial class ThreadCpu
{
    private const int ClockThreadCpuTimeId = 3;

    /// <summary>Nanoseconds of CPU the calling thread has used.</summary>
    public static long Nanoseconds()
    {
        if (clock_gettime(ClockThreadCpuTimeId, out Timespec t) != 0)
        {
            throw new InvalidOperationException("clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed.");
        }

        return (t.Seconds * 1_000_000_000L) + t.Nanoseconds;
    }

    [LibraryImport("libc")]
    private static partial int clock_gettime(int clock, out Timespec time);

    [StructLayout(LayoutKind.Sequential)]
    private struct Timespec
    {
        public long Seconds;
        public long Nanoseconds;
    }
}

/// <summary>
/// What a consumer thread spends in CPU per frame on the transport: its CPU time from the end of one frame (released)
/// to the acknowledgement of the next, the wait, the receive and the acknowledgement included (a spinning wait costs
/// its CPU, a sleeping one almost none), the consumer's own work on the frame (the check of its bytes) not.
/// </summary>
internal sealed class FrameCpu
{
    private long _waitStart = -1;
    private long _total;
    private int _frames;

    /// <summary>A frame arrived and was acknowledged (on the consuming thread): ends the wait begun by <see cref="Done"/>.</summary>
    public void Arrived()
    {
        if (_waitStart >= 0)
        {
            _total += ThreadCpu.Nanoseconds() - _waitStart;
            _frames++;
            _waitStart = -1;
        }
    }

    /// <summary>The frame is released: the wait for the next begins.</summary>
    public void Done() => _waitStart = ThreadCpu.Nanoseconds();

    /// <summary>Microseconds of CPU per frame; 0 before two frames.</summary>
    public double MicrosecondsPerFrame => _frames == 0 ? 0 : _total / 1000.0 / _frames;
}

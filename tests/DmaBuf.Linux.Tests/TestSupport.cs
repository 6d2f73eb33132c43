using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;

namespace DmaBuf.Linux.Tests;

/// <summary>What this process holds, counted from /proc: the leak checks compare these before and after.</summary>
internal static class ProcessResources
{

    /// <summary>
    /// Mappings of memfd and dma-buf files in this process (lines of /proc/self/maps), less the runtime's own W^X
    /// "doublemapper" memfd, whose mappings come and go with the JIT.
    /// </summary>
    public static int BufferMappings() => BufferMappingLines().Count();

    /// <summary>The lines of /proc/self/maps that <see cref="BufferMappings"/> counts.</summary>
    public static IEnumerable<string> BufferMappingLines() =>
        File.ReadLines("/proc/self/maps").Where(l =>
            (l.Contains("/memfd:", StringComparison.Ordinal) && !l.Contains("doublemapper", StringComparison.Ordinal))
            || l.Contains("/dmabuf:", StringComparison.Ordinal));

    public static bool IsOpen(int fd) => File.Exists($"/proc/self/fd/{fd}") || Directory.Exists($"/proc/self/fd/{fd}");

    /// <summary>The resident size (<c>Rss</c> in /proc/self/smaps) of the mapping that starts at <paramref name="address"/>.</summary>
    public static long ResidentKiB(nint address)
    {
        string start = ((ulong)address).ToString("x", System.Globalization.CultureInfo.InvariantCulture);
        bool inMapping = false;
        foreach (string line in File.ReadLines("/proc/self/smaps"))
        {
            string first = line.Split(' ', 2)[0];
            if (!first.EndsWith(':')) // a mapping's header line ("start-end perms ..."), not one of its fields
            {
                inMapping = line.StartsWith(start + "-", StringComparison.Ordinal);
            }
            else if (inMapping && line.StartsWith("Rss:", StringComparison.Ordinal))
            {
                return long.Parse(line[4..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
            }
        }

        throw new InvalidOperationException($"No mapping starts at 0x{start}.");
    }

    public static string UniqueSocketName(string what) => $"dmabuf-test-{Environment.ProcessId}-{what}-{Guid.NewGuid():N}";
}

/// <summary>
/// What this process holds at one moment: each open descriptor with what it refers to, and each buffer mapping. A
/// leak is something held afterwards that was not held before. Comparing counts would not do: a finalizer or a
/// previous test's background thread may close a descriptor in the meantime, and the count then drops.
/// </summary>
internal sealed class ProcessSnapshot
{
    private readonly HashSet<string> _fds;
    private readonly HashSet<string> _mappings;

    private ProcessSnapshot(HashSet<string> fds, HashSet<string> mappings) => (_fds, _mappings) = (fds, mappings);

    /// <summary>Lets pending finalizers run (they close what earlier tests dropped), then records what is held.</summary>
    public static ProcessSnapshot Take()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        return new ProcessSnapshot(Descriptors(), [.. ProcessResources.BufferMappingLines()]);
    }

    /// <summary>Descriptors and mappings held now that were not held at <see cref="Take"/>, one line each.</summary>
    public IReadOnlyList<string> HeldSince()
    {
        var now = new ProcessSnapshot(Descriptors(), [.. ProcessResources.BufferMappingLines()]);
        return [.. now._fds.Where(f => !_fds.Contains(f)).Select(f => $"descriptor {f}"),
            .. now._mappings.Where(m => !_mappings.Contains(m)).Select(m => $"mapping {m}")];
    }

    public void AssertNothingHeldSince(string context)
    {
        IReadOnlyList<string> held = HeldSince();
        Assert.True(held.Count == 0, $"{context}: leaked {string.Join("; ", held)}");
    }

    private static HashSet<string> Descriptors()
    {
        var fds = new HashSet<string>(StringComparer.Ordinal);
        foreach (string path in Directory.GetFileSystemEntries("/proc/self/fd"))
        {
            string? target;
            try
            {
                target = new FileInfo(path).LinkTarget;
            }
            catch (IOException)
            {
                continue; // closed while we listed (another thread's)
            }

            if (target is null || target.EndsWith("/fd", StringComparison.Ordinal))
            {
                continue; // gone while we listed, or the listing's own descriptor of this directory
            }

            // The runtime opens assemblies and native libraries as it first needs them, and its socket engine's epoll
            // instance the first time any test in the process awaits a socket (we never make an epoll ourselves);
            // those are not ours to leak.
            if (target.EndsWith(".dll", StringComparison.Ordinal) || target.Contains(".so", StringComparison.Ordinal) ||
                target == "anon_inode:[eventpoll]")
            {
                continue;
            }

            fds.Add($"{Path.GetFileName(path)} -> {target}");
        }

        return fds;
    }
}

/// <summary>Leak checks: what the process holds before and after a scenario.</summary>
internal static class Leaks
{
    /// <summary>
    /// Runs <paramref name="scenario"/> once to warm up (the runtime opens some files lazily, e.g. on its first
    /// exception), then <paramref name="rounds"/> more times, and asserts that no descriptor or buffer mapping is held
    /// that was not held after the warm-up.
    /// </summary>
    public static void AssertNone(Action scenario, int rounds = 3)
    {
        scenario();
        ProcessSnapshot before = ProcessSnapshot.Take();
        for (int i = 0; i < rounds; i++)
        {
            scenario();
        }

        before.AssertNothingHeldSince($"after {rounds} rounds");
    }
}

/// <summary>The test peer (tests/DmaBuf.Linux.TestPeer) running as a real second process.</summary>
internal sealed class PeerProcess : IDisposable
{
    // A hang guard, not a timing assertion. In the QEMU guest of the kernel tests (DMABUF_GUEST=1) the runtime starts
    // about twenty times slower, so the peer gets longer there.
    private static readonly TimeSpan s_patience =
        TimeSpan.FromSeconds(Environment.GetEnvironmentVariable("DMABUF_GUEST") == "1" ? 120 : 30);
    private readonly Process _process;
    private readonly BlockingCollection<string> _lines = [];
    private readonly ConcurrentQueue<string> _errors = new();

    private PeerProcess(Process process)
    {
        _process = process;
        _process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null)
            {
                _lines.CompleteAdding();
            }
            else
            {
                _lines.Add(e.Data);
            }
        };
        _process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                _errors.Enqueue(e.Data);
            }
        };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public int Id => _process.Id;

    public static PeerProcess Start(params string[] args)
    {
        string dir = AppContext.BaseDirectory;
        string dll = Path.Combine(dir, "DmaBuf.Linux.TestPeer.dll");
        var info = new ProcessStartInfo
        {
            FileName = DotnetMuxer(),
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(dll);
        foreach (string a in args)
        {
            info.ArgumentList.Add(a);
        }

        return new PeerProcess(Process.Start(info)!);
    }

    /// <summary>Waits for the next line starting with <paramref name="prefix"/>; returns its words after the prefix.</summary>
    public string[] Expect(string prefix)
    {
        while (true)
        {
            if (!_lines.TryTake(out string? line, s_patience))
            {
                throw new Xunit.Sdk.XunitException($"The peer said nothing for {s_patience} while we waited for '{prefix}'. stderr: {Errors}");
            }

            if (line.StartsWith(prefix, StringComparison.Ordinal))
            {
                return line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1..];
            }
        }
    }

    public string Errors => string.Join('\n', _errors);

    public int WaitForExit()
    {
        if (!_process.WaitForExit(s_patience))
        {
            throw new Xunit.Sdk.XunitException($"The peer did not exit. stderr: {Errors}");
        }

        _process.WaitForExit(); // drain the output
        return _process.ExitCode;
    }

    public void Kill()
    {
        _process.Kill();
        _process.WaitForExit();
    }

    public void Dispose()
    {
        if (!_process.HasExited)
        {
            _process.Kill();
            _process.WaitForExit();
        }

        _process.Dispose();
        _lines.Dispose();
    }

    /// <summary>The dotnet host of the runtime running the tests (…/dotnet/shared/Microsoft.NETCore.App/x.y.z/../../../dotnet).</summary>
    private static string DotnetMuxer()
    {
        string runtime = RuntimeEnvironment.GetRuntimeDirectory();
        string candidate = Path.GetFullPath(Path.Combine(runtime, "..", "..", "..", "dotnet"));
        return File.Exists(candidate) ? candidate : "dotnet";
    }
}

/// <summary>A device in an address space the Linux exporters do not serve.</summary>
internal sealed class ForeignDevice : IDmaDevice
{
    public string Name => "iommu-device";

    public IDmaAddressSpace AddressSpace { get; } = new ForeignSpace();

    public bool IsCoherent => false;

    private sealed class ForeignSpace : IDmaAddressSpace
    {
        public long Id => 7;

        public string Name => "smmu0";

        public ScatterTable Map(ScatterTable physical, DmaDirection direction) => physical;

        public void Unmap(ScatterTable mapped, DmaDirection direction)
        {
        }
    }
}

/// <summary>
/// Work on a thread of its own, waited for with a hang guard (not a timing assertion): a call that should return
/// within its deadline but hangs fails the test instead of hanging the run.
/// </summary>
internal sealed class Background<T>
{
    private readonly Thread _thread;
    private T? _result;
    private System.Runtime.ExceptionServices.ExceptionDispatchInfo? _error;

    private Background(Func<T> work)
    {
        _thread = new Thread(() =>
        {
            try
            {
                _result = work();
            }
            catch (Exception e)
            {
                _error = System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e);
            }
        })
        { IsBackground = true };
        _thread.Start();
    }

    /// <summary>The guard: far longer than any deadline a test sets, far shorter than forever.</summary>
    public static TimeSpan Guard { get; } = TimeSpan.FromSeconds(30);

    public bool IsCompleted => !_thread.IsAlive;

    public static Background<T> Start(Func<T> work) => new(work);

    /// <summary>Runs <paramref name="work"/> and returns its result, failing the test if it has not returned within the guard.</summary>
    public static T Run(Func<T> work) => Start(work).Result;

    public bool Wait(TimeSpan timeout) => _thread.Join(timeout);

    /// <summary>The result (rethrowing what the work threw); fails the test if it has not returned within the guard.</summary>
    public T Result
    {
        get
        {
            Assert.True(_thread.Join(Guard), $"The call did not return within {Guard}.");
            _error?.Throw();
            return _result!;
        }
    }
}

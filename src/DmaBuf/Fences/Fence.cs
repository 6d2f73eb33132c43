// Ownership: fences are plain garbage-collected objects; nothing to dispose. A FenceCallback registration belongs to
// whoever added it: it may be removed once, and after the fence signals it is spent. A fence's callbacks run exactly
// once, on the thread whose Signal call won, after the fence's own lock has been released.
using System.Diagnostics;

namespace DmaBuf;

/// <summary>
/// A one-shot completion point (<c>struct dma_fence</c>): created unsignaled on a <see cref="FenceContext"/> with a
/// sequence number, signaled exactly once, optionally with an error.
/// </summary>
/// <remarks>
/// <para><b>States.</b> Pending (<see cref="Status"/> 0), then signaled: <see cref="Status"/> 1, or a negative errno set
/// with <see cref="SetError"/> or <see cref="SignalWithError"/> before the signal. A signaled fence never changes
/// again.</para>
/// <para><b>Callbacks.</b> <see cref="AddCallback"/> registers a callback that runs exactly once, when the fence
/// signals, on the signaling thread. Adding to a signaled fence returns <see langword="null"/> and the callback never
/// runs (the kernel's <c>-ENOENT</c>). <see cref="RemoveCallback"/> succeeds only before the signal. Callbacks run in
/// the order they were added, with no framework lock held (rule 5); they must be short and must not block.</para>
/// <para><b>Threads.</b> Every member is thread-safe. <see cref="IsSignaled"/> and <see cref="Status"/> are a single
/// volatile read. The fence's lock guards only its callback list and is never held while a callback runs.</para>
/// </remarks>
public sealed class Fence
{
    /// <summary>Largest errno magnitude a fence error may have (the kernel's <c>MAX_ERRNO</c>).</summary>
    public const int MaxErrno = 4095;

    private static readonly Task<bool> s_true = Task.FromResult(true);
    private static readonly Task<bool> s_false = Task.FromResult(false);

    // Guards _head, _tail, _error and the pending -> signaled transition. A leaf: nothing else is locked inside it and
    // no callback runs under it. A Monitor rather than System.Threading.Lock because Coyote's binary rewriter controls
    // Monitor, which lets the systematic race test (FenceCoyoteTests) schedule threads inside these sections.
    private readonly object _gate = new();
    private FenceCallback? _head;
    private FenceCallback? _tail;
    private int _error;
    private long _timestamp;
    private int _status; // 0 pending, 1 signaled, < 0 signaled with that error; written once, under _gate

    /// <summary>Creates an unsignaled fence (<c>dma_fence_init</c>).</summary>
    /// <param name="context">The timeline the fence belongs to.</param>
    /// <param name="sequenceNumber">Its position on that timeline; later fences have larger numbers.</param>
    public Fence(FenceContext context, ulong sequenceNumber)
    {
        ArgumentNullException.ThrowIfNull(context);
        Context = context;
        SequenceNumber = sequenceNumber;
    }

    /// <summary>
    /// A fence that is always signaled (<c>dma_fence_get_stub</c>): what to hand out when there is nothing to wait for.
    /// </summary>
    public static Fence Signaled { get; } = CreateStub();

    /// <summary>The fence's timeline.</summary>
    public FenceContext Context { get; }

    /// <summary>Position on the timeline (<c>seqno</c>).</summary>
    public ulong SequenceNumber { get; }

    /// <summary>Whether the fence has signaled (<c>dma_fence_is_signaled</c>). One volatile read.</summary>
    public bool IsSignaled => Volatile.Read(ref _status) != 0;

    /// <summary>
    /// 0 while pending, 1 once signaled without error, the negative errno once signaled with an error
    /// (<c>dma_fence_get_status</c>). An error set before the signal is not visible here until the signal.
    /// </summary>
    public int Status => Volatile.Read(ref _status);

    /// <summary>When the fence signaled, in <see cref="Stopwatch.GetTimestamp"/> ticks; null while pending.</summary>
    public long? SignalTimestamp => IsSignaled ? Volatile.Read(ref _timestamp) : null;

    /// <summary>Number of callbacks registered and not yet run or removed (for tests and listings).</summary>
    internal int CallbackCount
    {
        get
        {
            lock (_gate)
            {
                int count = 0;
                for (FenceCallback? c = _head; c is not null; c = c.Next)
                {
                    count++;
                }

                return count;
            }
        }
    }

    /// <summary>
    /// Whether <paramref name="first"/> comes after <paramref name="second"/> on their common timeline
    /// (<c>dma_fence_is_later</c>).
    /// </summary>
    /// <exception cref="ArgumentException">The fences belong to different contexts and cannot be ordered.</exception>
    public static bool IsLater(Fence first, Fence second)
    {
        ThrowIfDifferentContexts(first, second);
        return first.SequenceNumber > second.SequenceNumber;
    }

    /// <summary>Whether <paramref name="first"/> is <paramref name="second"/> or comes after it (<c>dma_fence_is_later_or_same</c>).</summary>
    /// <exception cref="ArgumentException">The fences belong to different contexts and cannot be ordered.</exception>
    public static bool IsLaterOrSame(Fence first, Fence second)
    {
        ThrowIfDifferentContexts(first, second);
        return first.SequenceNumber >= second.SequenceNumber;
    }

    /// <summary>
    /// Signals the fence (<c>dma_fence_signal</c>) and runs its callbacks on this thread, in the order they were added.
    /// Call with no framework lock held: the callbacks run here.
    /// </summary>
    /// <returns>True if this call signaled the fence; false if it was already signaled (nothing runs then).</returns>
    /// <exception cref="AggregateException">One or more callbacks threw. Every callback still ran once and the fence is signaled.</exception>
    /// <exception cref="LockOrderException">(Debug builds) callbacks are registered and the thread holds a framework lock;
    /// the fence is left pending.</exception>
    public bool Signal() => SignalCore(0);

    /// <summary>Sets <paramref name="error"/> and signals in one step; see <see cref="SetError"/> and <see cref="Signal"/>.</summary>
    /// <param name="error">A negative errno, -1 to -<see cref="MaxErrno"/>; <see cref="FenceError"/> has common ones.</param>
    /// <returns>True if this call signaled the fence; false if it was already signaled (the error is not applied then).</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="error"/> is not a negative errno.</exception>
    /// <exception cref="AggregateException">One or more callbacks threw; see <see cref="Signal"/>.</exception>
    public bool SignalWithError(int error)
    {
        ValidateError(error);
        return SignalCore(error);
    }

    /// <summary>
    /// Records an error to report once the fence signals (<c>dma_fence_set_error</c>): the work behind the fence failed.
    /// It becomes visible in <see cref="Status"/> at the signal. A later call replaces an earlier one.
    /// </summary>
    /// <param name="error">A negative errno, -1 to -<see cref="MaxErrno"/>.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="error"/> is not a negative errno.</exception>
    /// <exception cref="InvalidOperationException">The fence has already signaled; its status is final.</exception>
    public void SetError(int error)
    {
        ValidateError(error);
        lock (_gate)
        {
            if (_status != 0)
            {
                throw new InvalidOperationException($"{this} has already signaled; its status can no longer change.");
            }

            _error = error;
        }
    }

    /// <summary>
    /// Registers <paramref name="callback"/> to run once when the fence signals (<c>dma_fence_add_callback</c>).
    /// </summary>
    /// <returns>
    /// The registration, for <see cref="RemoveCallback"/>; or <see langword="null"/> if the fence has already signaled,
    /// in which case the callback is never run (the kernel's <c>-ENOENT</c>).
    /// </returns>
    public FenceCallback? AddCallback(Action<Fence> callback)
    {
        ArgumentNullException.ThrowIfNull(callback);
        if (IsSignaled)
        {
            return null;
        }

        var registration = new FenceCallback(this, callback);
        lock (_gate)
        {
            if (_status != 0)
            {
                return null;
            }

            registration.Previous = _tail;
            if (_tail is null)
            {
                _head = registration;
            }
            else
            {
                _tail.Next = registration;
            }

            _tail = registration;
            registration.IsLinked = true;
        }

        return registration;
    }

    /// <summary>Unregisters a callback (<c>dma_fence_remove_callback</c>).</summary>
    /// <returns>
    /// True if the callback was removed and will never run; false if it was already removed, or the fence has signaled
    /// (the callback has run or is running on the signaling thread).
    /// </returns>
    /// <exception cref="ArgumentException">The registration belongs to another fence.</exception>
    public bool RemoveCallback(FenceCallback registration)
    {
        ArgumentNullException.ThrowIfNull(registration);
        if (!ReferenceEquals(registration.Fence, this))
        {
            throw new ArgumentException($"The callback was registered on {registration.Fence}, not on {this}.", nameof(registration));
        }

        lock (_gate)
        {
            // Signaling detaches the whole list at once, so after the signal no registration can be removed.
            if (_status != 0 || !registration.IsLinked)
            {
                return false;
            }

            if (registration.Previous is null)
            {
                _head = registration.Next;
            }
            else
            {
                registration.Previous.Next = registration.Next;
            }

            if (registration.Next is null)
            {
                _tail = registration.Previous;
            }
            else
            {
                registration.Next.Previous = registration.Previous;
            }

            registration.Next = registration.Previous = null;
            registration.IsLinked = false;
            return true;
        }
    }

    /// <summary>
    /// Blocks until the fence signals, the timeout passes or the token is canceled (<c>dma_fence_wait_timeout</c>).
    /// A zero timeout only tests. Do not call while holding a framework lock.
    /// </summary>
    /// <param name="timeout">How long to wait; <see cref="Timeout.InfiniteTimeSpan"/> waits for ever.</param>
    /// <param name="cancellationToken">Cancels the wait (the kernel's interruptible wait).</param>
    /// <returns>True if the fence is signaled; false if the timeout passed first.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The timeout is negative and not infinite, or too large.</exception>
    /// <exception cref="OperationCanceledException">The token was canceled before the fence signaled.</exception>
    public bool Wait(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ValidateTimeout(timeout);
        if (IsSignaled)
        {
            return true;
        }

        cancellationToken.ThrowIfCancellationRequested();
        if (timeout == TimeSpan.Zero)
        {
            return false;
        }

        var waiter = new BlockingWaiter();
        FenceCallback? registration = AddCallback(waiter.Wake);
        if (registration is null)
        {
            return true;
        }

        try
        {
            return waiter.Block(timeout, cancellationToken) || IsSignaled;
        }
        finally
        {
            RemoveCallback(registration);
        }
    }

    /// <summary>Waits asynchronously; see <see cref="Wait"/>. Continuations never run on the signaling thread.</summary>
    /// <returns>True if the fence is signaled; false if the timeout passed first.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The timeout is negative and not infinite, or too large.</exception>
    /// <exception cref="OperationCanceledException">The token was canceled before the fence signaled.</exception>
    public Task<bool> WaitAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ValidateTimeout(timeout);
        if (IsSignaled)
        {
            return s_true;
        }

        if (cancellationToken.IsCancellationRequested)
        {
            return Task.FromCanceled<bool>(cancellationToken);
        }

        return timeout == TimeSpan.Zero ? s_false : WaitSlowAsync(timeout, cancellationToken);
    }

    /// <inheritdoc/>
    public override string ToString()
    {
        int status = Status;
        string state = status == 0 ? "pending" : status == 1 ? "signaled" : $"signaled, error {status}";
        return $"fence {Context}:{SequenceNumber} ({state})";
    }

    internal static void ValidateTimeout(TimeSpan timeout)
    {
        if (timeout != Timeout.InfiniteTimeSpan && (timeout < TimeSpan.Zero || timeout.TotalMilliseconds > int.MaxValue))
        {
            throw new ArgumentOutOfRangeException(
                nameof(timeout), timeout, "The timeout must be zero or positive (at most int.MaxValue ms), or Timeout.InfiniteTimeSpan.");
        }
    }

    private static void ValidateError(int error)
    {
        if (error is >= 0 or < -MaxErrno)
        {
            throw new ArgumentOutOfRangeException(nameof(error), error, $"A fence error is a negative errno, -1 to -{MaxErrno}.");
        }
    }

    private static void ThrowIfDifferentContexts(Fence first, Fence second)
    {
        ArgumentNullException.ThrowIfNull(first);
        ArgumentNullException.ThrowIfNull(second);
        if (!ReferenceEquals(first.Context, second.Context))
        {
            throw new ArgumentException($"{first} and {second} are on different timelines and cannot be ordered.");
        }
    }

    private static Fence CreateStub()
    {
        var stub = new Fence(FenceContext.Allocate("stub"), 0);
        stub.Signal();
        return stub;
    }

    private bool SignalCore(int error)
    {
        // Catch a signal under a framework lock before anything changes, so the mistake costs no callback. The check in
        // RunCallbacks covers a callback added after this read.
        if (Volatile.Read(ref _head) is not null)
        {
            OrderedLock.AssertNoneHeld($"Signal of {this}, which runs its callbacks,");
        }

        FenceCallback? first;
        lock (_gate)
        {
            if (_status != 0)
            {
                return false;
            }

            if (error != 0)
            {
                _error = error;
            }

            _timestamp = Stopwatch.GetTimestamp();
            first = _head;
            _head = _tail = null;
            // Publishing the status detaches every registration at once: RemoveCallback now fails for all of them,
            // AddCallback refuses new ones, and only this thread walks the detached list.
            Volatile.Write(ref _status, _error != 0 ? _error : 1);
        }

        DmaBufMetrics.s_fencesSignaled.Add(1);
        if (first is not null)
        {
            RunCallbacks(first);
        }

        return true;
    }

    private void RunCallbacks(FenceCallback first)
    {
        OrderedLock.AssertNoneHeld("fence callback");
        List<Exception>? errors = null;
        for (FenceCallback? registration = first; registration is not null;)
        {
            FenceCallback? next = registration.Next;
            registration.Next = registration.Previous = null;
            try
            {
                registration.Callback(this);
            }
            catch (Exception e)
            {
                (errors ??= []).Add(e);
            }

            registration = next;
        }

        if (errors is not null)
        {
            throw new AggregateException($"{errors.Count} callback(s) of {this} threw; every callback ran and the fence is signaled.", errors);
        }
    }

    private async Task<bool> WaitSlowAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        var completion = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        FenceCallback? registration = AddCallback(_ => completion.TrySetResult(true));
        if (registration is null)
        {
            return true;
        }

        try
        {
            using var timer = timeout == Timeout.InfiniteTimeSpan ? null : new CancellationTokenSource(timeout);
            using CancellationTokenRegistration onTimeout = timer is null
                ? default
                : timer.Token.UnsafeRegister(static state => ((TaskCompletionSource<bool>)state!).TrySetResult(false), completion);
            using CancellationTokenRegistration onCancel = cancellationToken.UnsafeRegister(
                static (state, token) => ((TaskCompletionSource<bool>)state!).TrySetCanceled(token), completion);
            return await completion.Task.ConfigureAwait(false) || IsSignaled;
        }
        finally
        {
            RemoveCallback(registration);
        }
    }

    /// <summary>A thread blocked in <see cref="Wait"/>: woken by the fence's callback or by cancellation.</summary>
    private sealed class BlockingWaiter
    {
        private readonly object _gate = new();
        private bool _woken;

        public void Wake(Fence fence)
        {
            lock (_gate)
            {
                _woken = true;
                Monitor.PulseAll(_gate);
            }
        }

        public bool Block(TimeSpan timeout, CancellationToken cancellationToken)
        {
            using CancellationTokenRegistration onCancel = cancellationToken.UnsafeRegister(
                static state =>
                {
                    var waiter = (BlockingWaiter)state!;
                    lock (waiter._gate)
                    {
                        Monitor.PulseAll(waiter._gate);
                    }
                },
                this);
            long start = Stopwatch.GetTimestamp();
            lock (_gate)
            {
                while (!_woken)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    if (timeout == Timeout.InfiniteTimeSpan)
                    {
                        Monitor.Wait(_gate);
                        continue;
                    }

                    TimeSpan left = timeout - Stopwatch.GetElapsedTime(start);
                    if (left <= TimeSpan.Zero)
                    {
                        return false;
                    }

                    Monitor.Wait(_gate, left);
                }

                return true;
            }
        }
    }
}

/// <summary>A callback registered on a <see cref="Fence"/> by <see cref="Fence.AddCallback"/> (<c>struct dma_fence_cb</c>).</summary>
public sealed class FenceCallback
{
    internal FenceCallback(Fence fence, Action<Fence> callback)
    {
        Fence = fence;
        Callback = callback;
    }

    /// <summary>The fence the callback is registered on.</summary>
    public Fence Fence { get; }

    internal Action<Fence> Callback { get; }

    // List links, guarded by the fence's lock until the signal detaches the list.
    internal FenceCallback? Next { get; set; }

    internal FenceCallback? Previous { get; set; }

    internal bool IsLinked { get; set; }

    /// <summary>Same as <see cref="Fence.RemoveCallback"/> for this registration.</summary>
    /// <returns>True if the callback was removed before the fence signaled and will never run.</returns>
    public bool Remove() => Fence.RemoveCallback(this);
}

/// <summary>Common fence errors, as negative errno values (what <see cref="Fence.Status"/> reports).</summary>
public static class FenceError
{
    /// <summary><c>-EIO</c>: the work behind the fence failed.</summary>
    public const int IO = -5;

    /// <summary><c>-ENODEV</c>: the device went away.</summary>
    public const int NoDevice = -19;

    /// <summary><c>-ETIMEDOUT</c>: the work hung and was stopped.</summary>
    public const int TimedOut = -110;

    /// <summary><c>-ECANCELED</c>: the work was canceled before it ran.</summary>
    public const int Canceled = -125;

    /// <summary>
    /// Maps an exception from the work behind a fence to an errno for <see cref="Fence.SignalWithError"/>:
    /// cancellation gives <see cref="Canceled"/>, a timeout <see cref="TimedOut"/>, anything else <see cref="IO"/>.
    /// </summary>
    public static int FromException(Exception exception)
    {
        ArgumentNullException.ThrowIfNull(exception);
        return exception switch
        {
            OperationCanceledException => Canceled,
            TimeoutException => TimedOut,
            _ => IO,
        };
    }
}

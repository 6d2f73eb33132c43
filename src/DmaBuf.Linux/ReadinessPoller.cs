// Ownership: the poller owns its wake eventfd and its one thread for the life of the process. A waiter holds a
// reference (DangerousAddRef) on each descriptor it watches from registration until the poller's thread drops it, so a
// descriptor closed meanwhile is closed for real only once no poll can still be looking at its number.
using System.Runtime.InteropServices;

namespace DmaBuf.Linux;

/// <summary>
/// Waits, for every channel of the process at once, until one of two descriptors is readable (or hung up), or a socket
/// has room to send: one thread
/// in one <c>poll</c> over every waiter, however many channels await. It serves what the runtime's socket engine
/// does not: one wait that ends when either of two descriptors (the control ring's wake-up socket, the channel's
/// socket) is ready.
/// </summary>
/// <remarks>
/// A registration, a cancellation and a completion each write the wake eventfd, which makes the thread rebuild its
/// descriptor list. Completions run asynchronously (never on the poller's thread), so a continuation cannot stall
/// every other waiter.
/// </remarks>
internal sealed class ReadinessPoller
{
    private static readonly Lazy<ReadinessPoller> s_shared = new(() => new ReadinessPoller());

    private readonly Lock _lock = new();
    private readonly List<Waiter> _waiters = []; // under _lock; only the poller's thread removes
    private readonly SafeFdHandle _wake = Interop.Libc.CreateEventFd();
    private Interop.Libc.pollfd[] _fds = new Interop.Libc.pollfd[16]; // the poller's thread only

    private ReadinessPoller()
    {
        var thread = new Thread(Run) { IsBackground = true, Name = "dmabuf readiness poller" };
        thread.Start();
    }

    /// <summary>The process's poller (its thread starts at first use).</summary>
    internal static ReadinessPoller Shared => s_shared.Value;

    /// <summary>Waiters registered now (for tests).</summary>
    internal int Count
    {
        get
        {
            lock (_lock)
            {
                return _waiters.Count;
            }
        }
    }

    /// <summary>
    /// Completes when <paramref name="first"/> or <paramref name="second"/> is readable, hung up or in error; at once
    /// when either is closed already. Cancelled by <paramref name="cancellationToken"/>.
    /// </summary>
    internal Task WaitAsync(SafeFdHandle first, SafeFdHandle second, CancellationToken cancellationToken) =>
        WaitAsync(first, second, Interop.Libc.POLLIN | Interop.Libc.POLLRDHUP, cancellationToken);

    /// <summary>
    /// Completes when <paramref name="socket"/> has room to send (<c>POLLOUT</c>), is hung up or in error; at once when
    /// it is closed already. Cancelled by <paramref name="cancellationToken"/>.
    /// </summary>
    internal Task WaitWritableAsync(SafeFdHandle socket, CancellationToken cancellationToken) =>
        WaitAsync(socket, socket, Interop.Libc.POLLOUT | Interop.Libc.POLLRDHUP, cancellationToken);

    private Task WaitAsync(SafeFdHandle first, SafeFdHandle second, short events, CancellationToken cancellationToken)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return Task.FromCanceled(cancellationToken);
        }

        var waiter = new Waiter(this) { Events = events };
        if (!waiter.Hold(first, second))
        {
            return Task.CompletedTask; // closed: the caller's next receive sees it
        }

        if (cancellationToken.CanBeCanceled)
        {
            waiter.Registration = cancellationToken.UnsafeRegister(
                static (state, token) => ((Waiter)state!).Cancel(token), waiter);
        }

        lock (_lock)
        {
            _waiters.Add(waiter);
        }

        Signal();
        return waiter.Completion.Task;
    }

    private void Signal() => _ = Interop.Libc.SignalEventFd(_wake);

    private unsafe void Run()
    {
        var ready = new List<Waiter>();
        while (true)
        {
            int count;
            lock (_lock)
            {
                DropCompletedLocked();
                count = 1 + (2 * _waiters.Count);
                if (_fds.Length < count)
                {
                    _fds = new Interop.Libc.pollfd[Math.Max(count, _fds.Length * 2)];
                }

                _fds[0] = new Interop.Libc.pollfd { fd = (int)_wake.DangerousGetHandle(), events = Interop.Libc.POLLIN };
                for (int i = 0; i < _waiters.Count; i++)
                {
                    _fds[1 + (2 * i)] = new Interop.Libc.pollfd { fd = _waiters[i].First, events = _waiters[i].Events };
                    _fds[2 + (2 * i)] = new Interop.Libc.pollfd { fd = _waiters[i].Second, events = _waiters[i].Events };
                }
            }

            int r;
            fixed (Interop.Libc.pollfd* p = _fds)
            {
                r = Interop.Libc.poll(p, (nuint)count, -1);
            }

            if (r <= 0)
            {
                continue; // EINTR (nothing else is expected of a poll on descriptors we hold)
            }

            if (_fds[0].revents != 0)
            {
                Interop.Libc.DrainEventFd(_wake);
            }

            lock (_lock)
            {
                // Only this thread removes waiters, so the first count - 1 slots still describe _waiters[0..].
                for (int i = (count - 1) / 2 - 1; i >= 0; i--)
                {
                    if (_fds[1 + (2 * i)].revents != 0 || _fds[2 + (2 * i)].revents != 0)
                    {
                        ready.Add(_waiters[i]);
                        _waiters.RemoveAt(i);
                    }
                }
            }

            foreach (Waiter w in ready)
            {
                w.Complete();
            }

            ready.Clear();
        }
    }

    /// <summary>Drops waiters cancelled since the last poll (they stopped being watched only now).</summary>
    private void DropCompletedLocked()
    {
        for (int i = _waiters.Count - 1; i >= 0; i--)
        {
            if (_waiters[i].Completion.Task.IsCompleted)
            {
                _waiters[i].Release();
                _waiters.RemoveAt(i);
            }
        }
    }

    private sealed class Waiter(ReadinessPoller poller)
    {
        private SafeHandle? _first;
        private SafeHandle? _second;

        public TaskCompletionSource Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public CancellationTokenRegistration Registration { get; set; }

        /// <summary>What to wait for on both descriptors (readable, or room to send); hang-ups and errors always end it.</summary>
        public short Events { get; init; }

        public int First { get; private set; }

        public int Second { get; private set; }

        /// <summary>Takes a reference on both; false (holding neither) when either is closed.</summary>
        public bool Hold(SafeHandle first, SafeHandle second)
        {
            bool a = false;
            bool b = false;
            try
            {
                first.DangerousAddRef(ref a);
                second.DangerousAddRef(ref b);
            }
            catch (ObjectDisposedException)
            {
                if (a)
                {
                    first.DangerousRelease();
                }

                return false;
            }

            (_first, _second) = (first, second);
            (First, Second) = ((int)first.DangerousGetHandle(), (int)second.DangerousGetHandle());
            return true;
        }

        public void Cancel(CancellationToken token)
        {
            if (Completion.TrySetCanceled(token))
            {
                poller.Signal(); // the thread drops it and its references
            }
        }

        /// <summary>Called on the poller's thread once the waiter left the list.</summary>
        public void Complete()
        {
            Release();
            Completion.TrySetResult();
        }

        /// <summary>Drops both references and the cancellation registration (the poller's thread only).</summary>
        public void Release()
        {
            Registration.Dispose();
            _first?.DangerousRelease();
            _second?.DangerousRelease();
            (_first, _second) = (null, null);
        }
    }
}

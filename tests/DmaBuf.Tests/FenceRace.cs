using Microsoft.Coyote.Specifications;

namespace DmaBuf.Tests;

/// <summary>
/// The signal/callback races of st-dma-fence's test_race_signal_callback and of add/remove against signal. The same
/// code runs on real threads (FenceTests) and, from a copy of this assembly rewritten by Coyote, under Coyote's
/// scheduler (FenceCoyoteTests), where Task.Run, Monitor, Volatile and Interlocked become scheduling points.
/// </summary>
internal static class FenceRace
{
    /// <summary>Outcome of a threaded run.</summary>
    internal readonly record struct Result(int Passes, int Lost, int Duplicated, int RanAfterRefusal);

    /// <summary>Runs the two-thread race for <paramref name="passes"/> passes per thread on real threads.</summary>
    public static Result RunOnThreads(int passes, bool signalBeforeAdd)
    {
        var exchange = new Exchange();
        var records = new List<Registration>[2];
        var threads = new Thread[2];
        for (int id = 0; id < 2; id++)
        {
            int me = id;
            threads[id] = new Thread(() => records[me] = Side(exchange, me, passes, signalBeforeAdd));
        }

        foreach (Thread t in threads)
        {
            t.Start();
        }

        foreach (Thread t in threads)
        {
            t.Join();
        }

        int lost = 0, duplicated = 0, refusedButRan = 0;
        foreach (Registration r in records.SelectMany(x => x))
        {
            if (r.Added && r.Runs == 0)
            {
                lost++;
            }

            if (r.Runs > 1)
            {
                duplicated++;
            }

            if (!r.Added && r.Runs > 0)
            {
                refusedButRan++;
            }
        }

        return new Result(records[0].Count + records[1].Count, lost, duplicated, refusedButRan);
    }

    /// <summary>Coyote entry point: <see cref="SignalCallbackAsync"/>, each side signaling its fence before adding.</summary>
    public static Task SignalBeforeAddAsync() => SignalCallbackAsync(signalBeforeAdd: true);

    /// <summary>Coyote entry point: <see cref="SignalCallbackAsync"/>, each side signaling its fence after adding.</summary>
    public static Task SignalAfterAddAsync() => SignalCallbackAsync(signalBeforeAdd: false);

    /// <summary>
    /// One Coyote iteration of test_race_signal_callback: two tasks, two passes each. Checked after both finish, since
    /// a callback runs on the other task's thread.
    /// </summary>
    public static async Task SignalCallbackAsync(bool signalBeforeAdd)
    {
        const int Passes = 2;
        var exchange = new Exchange();
        Task<List<Registration>>[] sides =
        [
            Task.Run(() => Side(exchange, 0, Passes, signalBeforeAdd)),
            Task.Run(() => Side(exchange, 1, Passes, signalBeforeAdd)),
        ];
        // Arrays, not spans: Coyote 1.7 controls the array overloads of WhenAll only.
        List<Registration>[] records = await Task.WhenAll(sides);
        foreach (Registration r in records.SelectMany(x => x))
        {
            Specification.Assert(!r.Added || r.Runs == 1, "a callback added before the signal ran {0} times", r.Runs);
            Specification.Assert(r.Added || r.Runs == 0, "a callback refused as late ran {0} times", r.Runs);
        }
    }

    /// <summary>
    /// One Coyote iteration of add and remove racing two signalers: exactly one signal wins; a callback runs exactly
    /// once, on the winner's thread, unless its add was refused or its removal succeeded, and then never.
    /// </summary>
    public static async Task AddRemoveSignalAsync()
    {
        var fence = new Fence(FenceContext.Allocate("coyote"), 1);
        var kept = new Registration();
        var removed = new Registration();
        int winnerThread = 0;
        int winners = 0;

        Task add = Task.Run(() => kept.Added = fence.AddCallback(f => kept.Ran(f)) is not null);
        Task addRemove = Task.Run(() =>
        {
            FenceCallback? registration = fence.AddCallback(f => removed.Ran(f));
            removed.Added = registration is not null;
            removed.Removed = registration is not null && registration.Remove();
        });
        Task[] signalers = [.. Enumerable.Range(0, 2).Select(_ => Task.Run(() =>
        {
            if (fence.Signal())
            {
                Interlocked.Increment(ref winners);
                Volatile.Write(ref winnerThread, Environment.CurrentManagedThreadId);
            }
        }))];

        Task[] all = [add, addRemove, .. signalers];
        await Task.WhenAll(all);

        Specification.Assert(winners == 1, "{0} Signal calls won", winners);
        Specification.Assert(fence.IsSignaled && fence.Status == 1, "fence not signaled: {0}", fence);
        Specification.Assert(kept.Runs == (kept.Added ? 1 : 0), "kept callback: added {0}, ran {1} times", kept.Added, kept.Runs);
        Specification.Assert(!kept.Added || kept.Thread == winnerThread, "kept callback ran off the signaling thread");
        int expected = removed.Added && !removed.Removed ? 1 : 0;
        Specification.Assert(removed.Runs == expected, "removed callback: added {0}, removed {1}, ran {2} times", removed.Added, removed.Removed, removed.Runs);
        Specification.Assert(kept.LocksHeld == 0 && removed.LocksHeld == 0, "a callback ran with a framework lock held");
        Specification.Assert(fence.CallbackCount == 0, "registrations left on a signaled fence");
    }

    // One thread of the kernel test: publish a fence of our own, pick up the other thread's latest, add a callback to it
    // and signal ours before or after the add; wait for theirs if the add succeeded. The other's latest may be from an
    // earlier pass and already signaled: then the add is refused, as the kernel test's "miss".
    private static List<Registration> Side(Exchange exchange, int id, int passes, bool signalBeforeAdd)
    {
        var context = FenceContext.Allocate($"race-{id}");
        var records = new List<Registration>(passes);
        for (int pass = 1; pass <= passes; pass++)
        {
            var mine = new Fence(context, (ulong)pass);
            exchange.Publish(id, mine);
            Fence theirs = exchange.Latest(1 - id);
            if (signalBeforeAdd)
            {
                mine.Signal();
            }

            var record = new Registration();
            record.Added = theirs.AddCallback(record.Ran) is not null;
            if (!signalBeforeAdd)
            {
                mine.Signal();
            }

            if (record.Added)
            {
                // Their owner signals it in its current pass without waiting on us first, so this returns.
                theirs.Wait(Timeout.InfiniteTimeSpan);
            }

            records.Add(record);
        }

        return records;
    }

    /// <summary>
    /// The kernel test's pair of RCU-published fence pointers. The kernel spins until the other side has published;
    /// here the first publication completes a task to wait on, so Coyote need not explore a spinning loop.
    /// </summary>
    private sealed class Exchange
    {
        private readonly Fence?[] _latest = new Fence?[2];
        private readonly TaskCompletionSource[] _first = [new(), new()];

        public void Publish(int id, Fence fence)
        {
            Volatile.Write(ref _latest[id], fence);
            _first[id].TrySetResult();
        }

        public Fence Latest(int id)
        {
            _first[id].Task.Wait();
            return Volatile.Read(ref _latest[id])!;
        }
    }

    private sealed class Registration
    {
        private int _runs;

        public bool Added { get; set; }

        public bool Removed { get; set; }

        public int Runs => Volatile.Read(ref _runs);

        public int Thread { get; private set; }

        public int LocksHeld { get; private set; }

        public void Ran(Fence fence)
        {
            Thread = Environment.CurrentManagedThreadId;
            LocksHeld = OrderedLock.HeldByCurrentThread;
            Interlocked.Increment(ref _runs);
        }
    }
}

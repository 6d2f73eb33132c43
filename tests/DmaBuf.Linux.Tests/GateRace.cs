using Microsoft.Coyote.Specifications;

namespace DmaBuf.Linux.Tests;

/// <summary>
/// The channel's receive gate under contention: receivers that wait synchronously and asynchronously, and one that
/// gives up at a deadline. Run under Coyote's scheduler (ReceiveGateCoyoteTests) from rewritten assemblies, where the
/// gate's compare-and-swap, fences and semaphore become scheduling points: a lost wake-up is a deadlock Coyote reports,
/// two holders at once an assertion.
/// </summary>
internal static class GateRace
{
    /// <summary>Three receivers, two blocking and one awaiting: one inside at a time, and every one gets in.</summary>
    public static async Task ThreeReceiversOneAtATimeAsync()
    {
        var gate = new ReceiveGate();
        var inside = new Counter();
        Task[] receivers =
        [
            Task.Run(() => Blocking(gate, inside)),
            Task.Run(() => Blocking(gate, inside)),
            Task.Run(async () =>
            {
                await gate.EnterAsync(CancellationToken.None);
                Visit(gate, inside);
            }),
        ];
        await Task.WhenAll(receivers);
        Specification.Assert(inside.Visits == 3, $"{inside.Visits} of 3 receivers got in");
        Specification.Assert(gate.TryEnter(), "the gate is held after every receiver left");
    }

    /// <summary>A receiver that gives up at once while another holds the gate: the next one still gets in.</summary>
    public static async Task AReceiverThatGivesUp_LeavesNoWakeUpLostAsync()
    {
        var gate = new ReceiveGate();
        var inside = new Counter();
        Task[] receivers =
        [
            Task.Run(() => Blocking(gate, inside)),
            Task.Run(() =>
            {
                if (gate.Enter(Deadline.Now)) // may find it free, or give up
                {
                    Visit(gate, inside);
                }
            }),
            Task.Run(() => Blocking(gate, inside)),
        ];
        await Task.WhenAll(receivers);
        Specification.Assert(inside.Visits >= 2, $"only {inside.Visits} receivers got in");
        Specification.Assert(gate.TryEnter(), "the gate is held after every receiver left");
    }

    private static void Blocking(ReceiveGate gate, Counter inside)
    {
        Specification.Assert(gate.Enter(Deadline.Never), "a receiver without a deadline did not get in");
        Visit(gate, inside);
    }

    private static void Visit(ReceiveGate gate, Counter inside)
    {
        int now = Interlocked.Increment(ref inside.Inside);
        Specification.Assert(now == 1, $"{now} receivers inside the gate at once");
        Interlocked.Increment(ref inside.Visits);
        Interlocked.Decrement(ref inside.Inside);
        gate.Exit();
    }

    private sealed class Counter
    {
        public int Inside;
        public int Visits;
    }
}

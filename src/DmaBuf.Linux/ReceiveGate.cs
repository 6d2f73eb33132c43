namespace DmaBuf.Linux;

/// <summary>
/// The channel's one-receiver-at-a-time gate: a flag taken with one compare-and-swap when free (the case of every
/// receive but a contended one), and a semaphore only for those who must wait, synchronously until a deadline or
/// asynchronously across awaits.
/// </summary>
/// <remarks>
/// A waiter counts itself in before it looks at the flag, and the holder frees the flag before it looks at the count,
/// both with full fences, so a holder that leaves always sees a waiter that failed to enter, and wakes one. A wake-up
/// can outlive the waiter it was meant for (it entered on its own meanwhile, or gave up): the next waiter then wakes
/// once for nothing and looks again. Not fair: whoever finds the flag free takes it.
/// </remarks>
internal sealed class ReceiveGate
{
    private readonly SemaphoreSlim _wake = new(0, int.MaxValue);
    private int _held;
    private int _waiters;

    /// <summary>Takes the gate if it is free.</summary>
    internal bool TryEnter() => Interlocked.CompareExchange(ref _held, 1, 0) == 0;

    /// <summary>Takes the gate, waiting until <paramref name="deadline"/> at most; false when it stayed held.</summary>
    internal bool Enter(Deadline deadline)
    {
        if (TryEnter())
        {
            return true;
        }

        Interlocked.Increment(ref _waiters);
        try
        {
            while (!TryEnter())
            {
                if (!_wake.Wait(deadline.RemainingMilliseconds))
                {
                    return TryEnter(); // the deadline passed: one last look
                }
            }

            return true;
        }
        finally
        {
            Interlocked.Decrement(ref _waiters);
        }
    }

    /// <summary>Takes the gate, awaiting it without a thread when it is held.</summary>
    /// <exception cref="OperationCanceledException">Cancelled while waiting; the gate was not taken.</exception>
    internal ValueTask EnterAsync(CancellationToken cancellationToken) =>
        TryEnter() ? ValueTask.CompletedTask : EnterSlowAsync(cancellationToken);

    /// <summary>Frees the gate and wakes one waiter, if any.</summary>
    internal void Exit()
    {
        Interlocked.Exchange(ref _held, 0);
        if (Volatile.Read(ref _waiters) > 0)
        {
            _wake.Release();
        }
    }

    private async ValueTask EnterSlowAsync(CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _waiters);
        try
        {
            while (!TryEnter())
            {
                await _wake.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            Interlocked.Decrement(ref _waiters);
        }
    }
}

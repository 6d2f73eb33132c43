using Microsoft.Coyote.Specifications;

namespace DmaBuf.Linux.Tests;

/// <summary>
/// The channel ledger's races with an in-memory wire instead of a socket: two sends of one new buffer, a send against
/// close (Dispose), a peer registration (the receive path) against close. The same code runs under Coyote's scheduler
/// from a rewritten copy of this assembly and of DmaBuf.Linux.dll (LedgerCoyoteTests), where Task.Run and the ledger's
/// Monitor locks become scheduling points.
/// </summary>
internal static class LedgerRace
{
    /// <summary>Two tasks send one new buffer: on the wire, the descriptor comes first and sequences increase.</summary>
    public static async Task TwoSendsOfOneNewBufferAsync()
    {
        var ledger = new ChannelLedger<Ref>(4, 100);
        var wire = new List<(long Sequence, bool WithFd)>();
        var buffer = new Ref();
        Task[] sends = [Task.Run(() => Send(ledger, wire, buffer)), Task.Run(() => Send(ledger, wire, buffer))];
        await Task.WhenAll(sends);

        Specification.Assert(wire.Count == 2, $"{wire.Count} messages on the wire");
        Specification.Assert(wire[0].WithFd && !wire[1].WithFd, "an id went out before its descriptor");
        Specification.Assert(wire[0].Sequence < wire[1].Sequence, "sequences out of order on the wire");
        Specification.Assert(ledger.SharedCount == 1 && ledger.OutstandingCount == 2, "ledger counts after two sends");
    }

    /// <summary>A send against close: whatever the order, every reference is dropped exactly once and nothing stays out.</summary>
    public static async Task SendVersusCloseAsync()
    {
        var ledger = new ChannelLedger<Ref>(4, 100);
        var wire = new List<(long Sequence, bool WithFd)>();
        var buffer = new Ref();
        var copies = new List<Ref>();
        Task send = Task.Run(() =>
        {
            try
            {
                Send(ledger, wire, buffer, copies);
            }
            catch (ChannelProtocolException)
            {
                // closed first
            }
        });
        Task close = Task.Run(() => ledger.Close(ChannelErrorReason.None)?.Drop.ForEach(r => r.Dispose()));
        Task[] both = [send, close]; // an array: Coyote 1.7 controls the array overloads of WhenAll only
        await Task.WhenAll(both);

        Specification.Assert(ledger.IsClosed && ledger.SharedCount == 0 && ledger.OutstandingCount == 0, "a closed ledger holds something");
        lock (copies)
        {
            foreach (Ref r in copies)
            {
                Specification.Assert(r.Disposals == 1, $"a registration disposed {r.Disposals} times");
            }
        }
    }

    /// <summary>A peer's registration (the receive path) against close: the imported reference is dropped exactly once.</summary>
    public static async Task RegisterVersusCloseAsync()
    {
        var ledger = new ChannelLedger<Ref>(4, 100);
        var imported = new Ref();
        Task receive = Task.Run(() =>
        {
            try
            {
                ledger.CheckIncoming(7, 10, transient: false);
                if (!ledger.Register(7, 10, imported))
                {
                    imported.Dispose(); // closed meanwhile: the caller keeps it
                }
            }
            catch (ChannelProtocolException)
            {
                imported.Dispose();
            }
        });
        Task close = Task.Run(() => ledger.Close(ChannelErrorReason.None)?.Drop.ForEach(r => r.Dispose()));
        Task[] both = [receive, close];
        await Task.WhenAll(both);

        Specification.Assert(imported.Disposals == 1, $"the imported reference was disposed {imported.Disposals} times");
        Specification.Assert(ledger.RegisteredCount == 0 && ledger.ResidentBytes == 0, "a closed ledger holds a registration");
    }

    private static void Send(ChannelLedger<Ref> ledger, List<(long, bool)> wire, Ref buffer, List<Ref>? copies = null)
    {
        using ChannelLedger<Ref>.SendScope order = ledger.EnterSend(Deadline.Never);
        ChannelLedger<Ref>.SendTicket t = ledger.BeginBuffer(1, buffer, transient: false, r =>
        {
            var copy = new Ref();
            if (copies is not null)
            {
                lock (copies)
                {
                    copies.Add(copy);
                }
            }

            return copy;
        });
        lock (wire)
        {
            wire.Add((t.Sequence, t.WithFd)); // the transmission, inside the send order
        }

        ledger.CompleteBuffer(t);
    }

    /// <summary>A reference that counts its disposals.</summary>
    internal sealed class Ref : IDisposable
    {
        private int _disposals;

        public int Disposals => Volatile.Read(ref _disposals);

        public void Dispose() => Interlocked.Increment(ref _disposals);
    }
}

using System.Text;
using CsCheck;

namespace DmaBuf.Linux.Tests;

/// <summary>
/// The channel ledger against a plain model: random sequences of begin-send (delivered or aborted), forget, ack,
/// release, the peer's registrations, deliveries, forgets and transient holds, goodbyes and close, checked after every
/// step (counts, which ids are shared, outstanding and registered, the resident bytes, the result of the step, and
/// that every reference the ledger was given is disposed exactly once by the time it lets go of it). CsCheck shrinks a
/// failing sequence to the shortest one and prints it.
/// </summary>
public sealed class ChannelLedgerModelTests
{
    private const int MaxRegistered = 3;
    private const long MaxBytes = 10;

    // 5,000 random sequences in CI; a longer run sets DMABUF_LEDGER_ITERATIONS.
    private static readonly long Iterations =
        long.TryParse(Environment.GetEnvironmentVariable("DMABUF_LEDGER_ITERATIONS"), out long n) && n > 0 ? n : 5_000;

    [Fact]
    public void Ledger_AgreesWithAPlainModel_AfterEveryStep()
    {
        Gen.Const(0).Select(_ => (new Actual(), new Model()))
            .SampleModelBased(
                [
                    Gen.Select(Gen.Int[1, 4], Gen.Bool, Gen.Int[0, 4]).Operation<Actual, Model>(
                        p => $"Send(id {p.Item1}, transient {p.Item2}, abort {p.Item3 == 0})",
                        (a, p) => a.Send(p.Item1, p.Item2, abort: p.Item3 == 0),
                        (m, p) => m.Send(p.Item1, p.Item2, abort: p.Item3 == 0)),
                    Gen.Int[1, 4].Operation<Actual, Model>(id => $"Forget({id})", (a, id) => a.Forget(id), (m, id) => m.Forget(id)),
                    Gen.Select(Gen.Int[1, 4], Gen.Int[1, 12]).Operation<Actual, Model>(
                        p => $"Ack({p.Item1}, #{p.Item2})", (a, p) => a.Ack(p.Item1, p.Item2), (m, p) => m.Ack(p.Item1, p.Item2)),
                    Gen.Select(Gen.Int[1, 4], Gen.Int[1, 12]).Operation<Actual, Model>(
                        p => $"Release({p.Item1}, #{p.Item2})", (a, p) => a.Release(p.Item1, p.Item2), (m, p) => m.Release(p.Item1, p.Item2)),
                    Gen.Int[0, 15].Operation<Actual, Model>(
                        k => $"ReleaseSent({k})", (a, k) => a.ReleaseSent(k), (m, k) => m.ReleaseSent(k)),
                    Gen.Select(Gen.Int[1, 4], Gen.Int[1, 5]).Operation<Actual, Model>(
                        p => $"PeerRegister({p.Item1}, {p.Item2} bytes)", (a, p) => a.PeerRegister(p.Item1, p.Item2), (m, p) => m.PeerRegister(p.Item1, p.Item2)),
                    Gen.Select(Gen.Int[1, 4], Gen.Int[1, 5]).Operation<Actual, Model>(
                        p => $"PeerDeliver({p.Item1}, {p.Item2} bytes)", (a, p) => a.PeerDeliver(p.Item1, p.Item2), (m, p) => m.PeerDeliver(p.Item1, p.Item2)),
                    Gen.Int[1, 4].Operation<Actual, Model>(id => $"PeerForget({id})", (a, id) => a.PeerForget(id), (m, id) => m.PeerForget(id)),
                    Gen.Int[1, 5].Operation<Actual, Model>(size => $"HoldTransient({size})", (a, s) => a.HoldTransient(s), (m, s) => m.HoldTransient(s)),
                    Gen.Operation<Actual, Model>("ReleaseTransient", a => a.ReleaseTransient(), m => m.ReleaseTransient()),
                    Gen.Operation<Actual, Model>("PeerGoodbye", a => a.PeerGoodbye(), m => m.PeerGoodbye()),
                    Gen.Operation<Actual, Model>("OurGoodbye", a => a.OurGoodbye(), m => m.OurGoodbye()),
                    Gen.Int[0, 9].Operation<Actual, Model>(n => n == 0 ? "Close" : "Nothing", (a, n) => a.MaybeClose(n), (m, n) => m.MaybeClose(n)),
                ],
                equal: Agree,
                iter: Iterations,
                threads: 1,
                seed: Environment.GetEnvironmentVariable("DMABUF_LEDGER_SEED"),
                printActual: a => a.ToString(),
                printModel: m => m.ToString());
    }

    private static bool Agree(Actual a, Model m)
    {
        ChannelLedger<Ref> l = a.Ledger;
        if (a.Last != m.Last || l.IsClosed != m.Closed || l.SharedCount != m.Shared.Count || l.OutstandingCount != m.Outstanding.Count
            || l.RegisteredCount != m.Registered.Count || l.ResidentBytes != m.ResidentBytes)
        {
            return false;
        }

        for (long id = 1; id <= 4; id++)
        {
            if (l.IsShared(id) != m.Shared.Contains(id) || l.IsRegistered(id) != m.Registered.ContainsKey(id))
            {
                return false;
            }

            for (long seq = 1; seq <= m.NextSequence; seq++)
            {
                if (l.IsOutstanding(id, seq) != m.Outstanding.ContainsKey((id, seq)))
                {
                    return false;
                }
            }
        }

        // Exactly once: no reference disposed twice; the live ones are exactly those the ledger holds.
        return a.Refs.All(r => r.Disposals <= 1) && a.Refs.Count(r => r.Disposals == 0) == m.Shared.Count + m.Registered.Count;
    }

    /// <summary>A reference that counts its disposals.</summary>
    internal sealed class Ref(string what) : IDisposable
    {
        public int Disposals { get; private set; }

        public void Dispose() => Disposals++;

        public override string ToString() => what;
    }

    /// <summary>The ledger under test, and the harness's side of it (what a transport would do with what it returns).</summary>
    internal sealed class Actual
    {
        private readonly Stack<long> _held = new();
        private readonly List<(long Id, long Seq)> _sent = [];

        public ChannelLedger<Ref> Ledger { get; } = new(MaxRegistered, MaxBytes);

        public List<Ref> Refs { get; } = [];

        public string Last { get; private set; } = "";

        public void Send(long id, bool transient, bool abort) => Do(() =>
        {
            using ChannelLedger<Ref>.SendScope order = Ledger.EnterSend(Deadline.Never);
            ChannelLedger<Ref>.SendTicket t = Ledger.BeginBuffer(id, new Ref("caller's"), transient, Duplicate);
            if (abort)
            {
                Ledger.AbortBuffer(t)?.Dispose();
                return $"aborted #{t.Sequence} fd {t.WithFd}";
            }

            Ledger.CompleteBuffer(t);
            _sent.Add((id, t.Sequence));
            return $"sent #{t.Sequence} fd {t.WithFd}";
        });

        /// <summary>Releases the <paramref name="k"/>-th delivery the harness saw go out (the peer would name it so).</summary>
        public void ReleaseSent(int k)
        {
            if (_sent.Count == 0)
            {
                Last = "nothing sent";
                return;
            }

            (long id, long seq) = _sent[k % _sent.Count];
            Release(id, seq);
        }

        public void Forget(long id) => Do(() =>
        {
            using ChannelLedger<Ref>.SendScope order = Ledger.EnterSend(Deadline.Never);
            Ref? r = Ledger.BeginForget(id);
            r?.Dispose();
            return r is null ? "not shared" : "forgot";
        });

        public void Ack(long id, long seq) => Do(() =>
        {
            Ledger.OnAck(id, seq);
            return "acked";
        });

        public void Release(long id, long seq) => Do(() => Ledger.OnRelease(id, seq) ? "released, last" : "released");

        public void PeerRegister(long id, long size) => Do(() =>
        {
            Ledger.CheckIncoming(id, size, transient: false);
            var r = new Ref($"peer's {id}");
            Refs.Add(r);
            if (!Ledger.Register(id, size, r))
            {
                r.Dispose();
                return "closed";
            }

            return "registered";
        });

        public void PeerDeliver(long id, long size) => Do(() =>
        {
            Ledger.CheckReceivable();
            Ledger.DeliverRegistered(id, size, Duplicate).Dispose();
            return "delivered";
        });

        public void PeerForget(long id) => Do(() =>
        {
            Ledger.CheckReceivable();
            Ledger.OnPeerForget(id).Dispose();
            return "peer forgot";
        });

        public void HoldTransient(long size) => Do(() =>
        {
            Ledger.CheckIncoming(0, size, transient: true);
            if (!Ledger.HoldTransient(size))
            {
                return "closed";
            }

            _held.Push(size);
            return "held";
        });

        public void ReleaseTransient() => Do(() =>
        {
            if (!_held.TryPop(out long size))
            {
                return "none held";
            }

            Ledger.ReleaseTransient(size);
            return "let go";
        });

        public void PeerGoodbye() => Do(() =>
        {
            Ledger.CheckReceivable();
            Ledger.OnGoodbye();
            return "goodbye received";
        });

        public void OurGoodbye() => Do(() =>
        {
            using ChannelLedger<Ref>.SendScope order = Ledger.EnterSend(Deadline.Never);
            return Ledger.BeginGoodbye() ? "goodbye said" : "too late";
        });

        public void MaybeClose(int n) => Do(() =>
        {
            if (n != 0)
            {
                return "nothing";
            }

            ChannelLedger<Ref>.CloseResult? closed = Ledger.Close(ChannelErrorReason.None);
            if (closed is null)
            {
                return "closed already";
            }

            closed.Drop.ForEach(r => r.Dispose());
            _held.Clear();
            return $"closed, undelivered {string.Join(",", closed.Undelivered.Order())}";
        });

        public override string ToString() =>
            $"last '{Last}', shared {Ledger.SharedCount}, outstanding {Ledger.OutstandingCount}, registered {Ledger.RegisteredCount}, " +
            $"resident {Ledger.ResidentBytes}, closed {Ledger.IsClosed}, live refs {Refs.Count(r => r.Disposals == 0)}, " +
            $"disposed twice {Refs.Count(r => r.Disposals > 1)}";

        private Ref Duplicate(Ref r)
        {
            var copy = new Ref($"copy of {r}");
            Refs.Add(copy);
            return copy;
        }

        private void Do(Func<string> step)
        {
            try
            {
                Last = step();
            }
            catch (ChannelProtocolException e)
            {
                Last = "refused " + e.Reason;
            }
        }
    }

    /// <summary>What the ledger should do, in the plainest terms.</summary>
    internal sealed class Model
    {
        private readonly Stack<long> _held = new();
        private readonly List<(long Id, long Seq)> _sent = [];
        private bool _goodbyeSent;
        private bool _goodbyeReceived;

        public HashSet<long> Shared { get; } = [];

        public Dictionary<(long Id, long Seq), bool> Outstanding { get; } = [];

        public Dictionary<long, long> Registered { get; } = [];

        public long NextSequence { get; private set; }

        public bool Closed { get; private set; }

        public long ResidentBytes => Registered.Values.Sum() + _held.Sum();

        public string Last { get; private set; } = "";

        public void Send(long id, bool transient, bool abort)
        {
            if (Closed || _goodbyeSent)
            {
                Last = "refused " + ChannelErrorReason.PeerClosed;
                return;
            }

            bool withFd = transient || !Shared.Contains(id);
            long seq = ++NextSequence;
            if (abort)
            {
                Last = $"aborted #{seq} fd {withFd}";
                return;
            }

            if (withFd && !transient)
            {
                Shared.Add(id);
            }

            Outstanding[(id, seq)] = true;
            _sent.Add((id, seq));
            Last = $"sent #{seq} fd {withFd}";
        }

        public void ReleaseSent(int k)
        {
            if (_sent.Count == 0)
            {
                Last = "nothing sent";
                return;
            }

            (long id, long seq) = _sent[k % _sent.Count];
            Release(id, seq);
        }

        public void Forget(long id)
        {
            Last = Closed || _goodbyeSent ? "refused " + ChannelErrorReason.PeerClosed : Shared.Remove(id) ? "forgot" : "not shared";
        }

        public void Ack(long id, long seq) => Last = Outstanding.ContainsKey((id, seq)) ? "acked" : "refused " + ChannelErrorReason.UnknownBufferId;

        public void Release(long id, long seq)
        {
            if (!Outstanding.Remove((id, seq)))
            {
                Last = "refused " + ChannelErrorReason.UnknownBufferId;
                return;
            }

            Last = Outstanding.Keys.Any(k => k.Id == id) ? "released" : "released, last";
        }

        public void PeerRegister(long id, long size)
        {
            if (Refusal(id, size, transient: false) is { } refused)
            {
                Last = refused;
            }
            else if (Closed)
            {
                Last = "closed";
            }
            else
            {
                Registered[id] = size;
                Last = "registered";
            }
        }

        public void PeerDeliver(long id, long size) => Last =
            _goodbyeReceived ? "refused " + ChannelErrorReason.MessageAfterGoodbye
            : !Registered.TryGetValue(id, out long known) ? "refused " + ChannelErrorReason.UnknownBufferId
            : known != size ? "refused " + ChannelErrorReason.BadBufferSize
            : "delivered";

        public void PeerForget(long id) => Last =
            _goodbyeReceived ? "refused " + ChannelErrorReason.MessageAfterGoodbye
            : Registered.Remove(id) ? "peer forgot"
            : "refused " + ChannelErrorReason.UnknownBufferId;

        public void HoldTransient(long size)
        {
            if (Refusal(0, size, transient: true) is { } refused)
            {
                Last = refused;
            }
            else if (Closed)
            {
                Last = "closed";
            }
            else
            {
                _held.Push(size);
                Last = "held";
            }
        }

        public void ReleaseTransient() => Last = _held.TryPop(out _) ? "let go" : "none held";

        public void PeerGoodbye()
        {
            if (_goodbyeReceived)
            {
                Last = "refused " + ChannelErrorReason.MessageAfterGoodbye;
                return;
            }

            _goodbyeReceived = true;
            Last = "goodbye received";
        }

        public void OurGoodbye()
        {
            Last = Closed || _goodbyeSent ? "too late" : "goodbye said";
            _goodbyeSent = true;
        }

        public void MaybeClose(int n)
        {
            if (n != 0)
            {
                Last = "nothing";
                return;
            }

            if (Closed)
            {
                Last = "closed already";
                return;
            }

            Closed = true;
            IEnumerable<long> undelivered = Outstanding.Where(o => o.Value).Select(o => o.Key.Id).Order(); // one per delivery out: each holds its pool buffer
            Last = $"closed, undelivered {string.Join(",", undelivered)}";
            Shared.Clear();
            Outstanding.Clear();
            Registered.Clear();
            _held.Clear();
        }

        public override string ToString()
        {
            var s = new StringBuilder();
            s.Append($"last '{Last}', shared [{string.Join(",", Shared.Order())}], outstanding [{string.Join(",", Outstanding.Keys.Order())}], ");
            s.Append($"registered [{string.Join(",", Registered.OrderBy(r => r.Key).Select(r => $"{r.Key}:{r.Value}"))}], resident {ResidentBytes}, closed {Closed}");
            return s.ToString();
        }

        private string? Refusal(long id, long size, bool transient)
        {
            if (!transient && Registered.ContainsKey(id))
            {
                return "refused " + ChannelErrorReason.DuplicateBufferId;
            }

            if (!transient && Registered.Count >= MaxRegistered)
            {
                return "refused " + ChannelErrorReason.TooManyBuffers;
            }

            if (transient && _held.Count >= MaxRegistered)
            {
                return "refused " + ChannelErrorReason.TooManyBuffers; // each holds a descriptor: counted as registrations are
            }

            return ResidentBytes + size > MaxBytes ? "refused " + ChannelErrorReason.ResidentBudget : null;
        }
    }
}

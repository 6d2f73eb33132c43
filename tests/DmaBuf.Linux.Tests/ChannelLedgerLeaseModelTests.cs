using System.Runtime.InteropServices;
using System.Text;
using CsCheck;

namespace DmaBuf.Linux.Tests;

/// <summary>
/// The consumer's lease path of the channel ledger against a plain model: random sequences of the peer's registrations
/// (with or without the registration's one mapping), leases (known id, unknown id, wrong size), reads through a lease's
/// frame, disposals of a lease (again after it ended, and after its pooled object serves a later delivery), the peer's
/// forgets (while leases are out), transient holds and close (while leases are out), checked after every step: the result
/// of the step, the ledger's counts and resident bytes, every reference disposed exactly once when the ledger lets go
/// of it, every mapping unmapped exactly once and only when its registration ended and its last lease was disposed,
/// every frame view live or refused exactly as the model says, and a stale view never reading the memory behind it.
/// </summary>
/// <remarks>The mappings are pinned arrays filled with a pattern per mapping; their unmap poisons them, so a read that
/// got through after the unmap would see the poison instead of the pattern.</remarks>
public sealed class ChannelLedgerLeaseModelTests
{
    private const int MaxRegistered = 3;
    private const long MaxBytes = 10;
    private const byte Poison = 0xEE;

    // 5,000 random sequences in CI; a longer run sets DMABUF_LEDGER_ITERATIONS.
    private static readonly long Iterations =
        long.TryParse(Environment.GetEnvironmentVariable("DMABUF_LEDGER_ITERATIONS"), out long n) && n > 0 ? n : 5_000;

    [Fact]
    public void Leases_AgreeWithAPlainModel_AfterEveryStep()
    {
        Gen.Const(0).Select(_ => (new Actual(), new Model()))
            .SampleModelBased(
                [
                    Gen.Select(Gen.Int[1, 4], Gen.Int[1, 5], Gen.Int[0, 3]).Operation<Actual, Model>(
                        p => $"PeerRegister({p.Item1}, {p.Item2} bytes, mapped {p.Item3 != 0})",
                        (a, p) => a.PeerRegister(p.Item1, p.Item2, mapped: p.Item3 != 0),
                        (m, p) => m.PeerRegister(p.Item1, p.Item2, mapped: p.Item3 != 0)),
                    Gen.Select(Gen.Int[1, 5], Gen.Int[1, 5]).Operation<Actual, Model>(
                        p => $"Lease({p.Item1}, {p.Item2} bytes)", (a, p) => a.Lease(p.Item1, p.Item2), (m, p) => m.Lease(p.Item1, p.Item2)),
                    Gen.Int[0, 15].Operation<Actual, Model>(k => $"Read(view {k})", (a, k) => a.Read(k), (m, k) => m.Read(k)),
                    Gen.Int[0, 15].Operation<Actual, Model>(k => $"Dispose(view {k})", (a, k) => a.Dispose(k), (m, k) => m.Dispose(k)),
                    Gen.Select(Gen.Int[1, 4], Gen.Bool).Operation<Actual, Model>(
                        p => $"PeerForget({p.Item1}, retire twice {p.Item2})",
                        (a, p) => a.PeerForget(p.Item1, p.Item2),
                        (m, p) => m.PeerForget(p.Item1)),
                    Gen.Int[1, 5].Operation<Actual, Model>(size => $"HoldTransient({size})", (a, s) => a.HoldTransient(s), (m, s) => m.HoldTransient(s)),
                    Gen.Operation<Actual, Model>("ReleaseTransient", a => a.ReleaseTransient(), m => m.ReleaseTransient()),
                    Gen.Int[0, 9].Operation<Actual, Model>(n => n == 0 ? "Close" : "Nothing", (a, n) => a.MaybeClose(n), (m, n) => m.MaybeClose(n)),
                ],
                equal: Agree,
                iter: Iterations,
                threads: 1,
                seed: Environment.GetEnvironmentVariable("DMABUF_LEDGER_SEED"),
                printActual: a => a.ToString(),
                printModel: m => m.ToString());
    }

    private static byte Pattern(int mapping) => (byte)(0x41 + (mapping % 60));

    private static bool Agree(Actual a, Model m)
    {
        ChannelLedger<Ref> l = a.Ledger;
        if (a.Last != m.Last || l.IsClosed != m.Closed || l.RegisteredCount != m.Registered.Count || l.ResidentBytes != m.ResidentBytes
            || a.Mappings.Count != m.Mappings.Count || a.Views.Count != m.Views.Count)
        {
            return false;
        }

        for (long id = 1; id <= 5; id++)
        {
            if (l.IsRegistered(id) != m.Registered.ContainsKey(id))
            {
                return false;
            }
        }

        // Exactly once: no reference disposed twice; the live ones are exactly those the ledger holds.
        if (a.Refs.Any(r => r.Disposals > 1) || a.Refs.Count(r => r.Disposals == 0) != m.Registered.Count)
        {
            return false;
        }

        // A mapping goes exactly once, and only when its registration ended and its last lease was disposed.
        for (int i = 0; i < a.Mappings.Count; i++)
        {
            (Mapped unmap, FrameMapping mapping) = a.Mappings[i];
            bool gone = m.Mappings[i].IsUnmapped;
            if (unmap.Disposals > 1 || (unmap.Disposals == 1) != gone || mapping.IsUnmapped != gone)
            {
                return false;
            }
        }

        // Every view is live or stale as the model says, and no pooled lease serves two live deliveries.
        var live = new HashSet<FrameLease>(ReferenceEqualityComparer.Instance);
        for (int k = 0; k < a.Views.Count; k++)
        {
            (FrameLease lease, long generation, _) = a.Views[k];
            bool isLive = lease.IsLive(generation);
            if (isLive != m.Views[k].Live || (isLive && !live.Add(lease)))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>A reference that counts its disposals.</summary>
    internal sealed class Ref(string what) : IDisposable
    {
        public int Disposals { get; private set; }

        public void Dispose() => Disposals++;

        public override string ToString() => what;
    }

    /// <summary>The memory behind one mapping (a pinned array) and its unmap, which counts and poisons it.</summary>
    internal sealed class Mapped : IDisposable
    {
        private readonly byte[] _bytes;

        public Mapped(int length, byte pattern)
        {
            _bytes = GC.AllocateArray<byte>(length, pinned: true);
            _bytes.AsSpan().Fill(pattern);
        }

        public nint Address => Marshal.UnsafeAddrOfPinnedArrayElement(_bytes, 0);

        public int Disposals { get; private set; }

        public void Dispose()
        {
            Disposals++;
            _bytes.AsSpan().Fill(Poison);
        }
    }

    /// <summary>The ledger under test, and the harness's side of it (what the channel does with what it returns).</summary>
    internal sealed class Actual
    {
        private readonly Stack<long> _held = new();

        public ChannelLedger<Ref> Ledger { get; } = new(MaxRegistered, MaxBytes);

        public List<Ref> Refs { get; } = [];

        public List<(Mapped Unmap, FrameMapping Mapping)> Mappings { get; } = [];

        /// <summary>Every frame view handed out, live or stale: its lease, the use it was made in, its mapping.</summary>
        public List<(FrameLease Lease, long Generation, int Mapping)> Views { get; } = [];

        public string Last { get; private set; } = "";

        public void PeerRegister(long id, long size, bool mapped) => Do(() =>
        {
            Ledger.CheckIncoming(id, size, transient: false);
            var r = new Ref($"peer's {id}");
            Refs.Add(r);
            FrameMapping? mapping = null;
            if (mapped)
            {
                var unmap = new Mapped((int)size, Pattern(Mappings.Count));
                mapping = new FrameMapping(unmap.Address, size, unmap);
                Mappings.Add((unmap, mapping));
            }

            if (!Ledger.Register(id, size, r, mapping))
            {
                r.Dispose();
                mapping?.Retire();
                return "closed";
            }

            return "registered";
        });

        public void Lease(long id, long size) => Do(() =>
        {
            FrameLease? lease = Ledger.LeaseRegistered(id, size);
            if (lease is null)
            {
                return "no mapping";
            }

            int mapping = Mappings.FindIndex(m => ReferenceEquals(m.Mapping, lease.Mapping));
            Views.Add((lease, lease.Generation, mapping));
            return $"leased m{mapping}";
        });

        public void Read(int k) => Do(() =>
        {
            if (Views.Count == 0)
            {
                return "no view";
            }

            (FrameLease lease, long generation, _) = Views[k % Views.Count];
            var frame = new ReceivedFrame(lease, generation);
            try
            {
                Span<byte> bytes = frame.Span;
                return $"read {bytes.Length} x {bytes[0]:x2}..{bytes[^1]:x2}";
            }
            catch (ObjectDisposedException)
            {
                return "stale";
            }
        });

        public void Dispose(int k) => Do(() =>
        {
            if (Views.Count == 0)
            {
                return "no view";
            }

            (FrameLease lease, long generation, _) = Views[k % Views.Count];
            lease.Dispose(generation);
            return "disposed";
        });

        public void PeerForget(long id, bool retireTwice) => Do(() =>
        {
            Ledger.OnPeerForget(id, out FrameMapping? mapping).Dispose();
            mapping?.Retire();
            if (retireTwice)
            {
                mapping?.Retire();
            }

            return mapping is null ? "peer forgot" : "peer forgot, mapped";
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

            closed.Mappings.ForEach(m => m.Retire());
            closed.Drop.ForEach(r => r.Dispose());
            _held.Clear();
            return $"closed, {closed.Mappings.Count} mappings";
        });

        public override string ToString() =>
            $"last '{Last}', registered {Ledger.RegisteredCount}, resident {Ledger.ResidentBytes}, closed {Ledger.IsClosed}, " +
            $"live refs {Refs.Count(r => r.Disposals == 0)}, disposed twice {Refs.Count(r => r.Disposals > 1)}, " +
            $"unmapped [{string.Join(",", Mappings.Select(m => m.Unmap.Disposals))}], " +
            $"live views [{string.Join(",", Views.Select(v => v.Lease.IsLive(v.Generation) ? 1 : 0))}]";

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

    /// <summary>What the lease path should do, in the plainest terms.</summary>
    internal sealed class Model
    {
        private readonly Stack<long> _held = new();

        /// <summary>The peer's registrations: size, and the index of their mapping (-1: none).</summary>
        public Dictionary<long, (long Size, int Mapping)> Registered { get; } = [];

        public List<MappingState> Mappings { get; } = [];

        public List<ViewState> Views { get; } = [];

        public bool Closed { get; private set; }

        public long ResidentBytes => Registered.Values.Sum(r => r.Size) + _held.Sum();

        public string Last { get; private set; } = "";

        public void PeerRegister(long id, long size, bool mapped)
        {
            if (Refusal(id, size, transient: false) is { } refused)
            {
                Last = refused;
                return;
            }

            int mapping = -1;
            if (mapped)
            {
                mapping = Mappings.Count;
                Mappings.Add(new MappingState { Size = size, Registered = !Closed });
            }

            if (Closed)
            {
                Last = "closed";
                return;
            }

            Registered[id] = (size, mapping);
            Last = "registered";
        }

        public void Lease(long id, long size)
        {
            if (!Registered.TryGetValue(id, out (long Size, int Mapping) r))
            {
                Last = "refused " + ChannelErrorReason.UnknownBufferId;
            }
            else if (r.Size != size)
            {
                Last = "refused " + ChannelErrorReason.BadBufferSize;
            }
            else if (r.Mapping < 0)
            {
                Last = "no mapping";
            }
            else
            {
                Mappings[r.Mapping].Leases++;
                Views.Add(new ViewState { Mapping = r.Mapping, Live = true });
                Last = $"leased m{r.Mapping}";
            }
        }

        public void Read(int k)
        {
            if (Views.Count == 0)
            {
                Last = "no view";
                return;
            }

            ViewState v = Views[k % Views.Count];
            byte p = Pattern(v.Mapping);
            Last = v.Live ? $"read {Mappings[v.Mapping].Size} x {p:x2}..{p:x2}" : "stale";
        }

        public void Dispose(int k)
        {
            if (Views.Count == 0)
            {
                Last = "no view";
                return;
            }

            ViewState v = Views[k % Views.Count];
            if (v.Live)
            {
                v.Live = false; // a second disposal, or one of an earlier use of a pooled lease, does nothing
                Mappings[v.Mapping].Leases--;
            }

            Last = "disposed";
        }

        public void PeerForget(long id)
        {
            if (!Registered.Remove(id, out (long Size, int Mapping) r))
            {
                Last = "refused " + ChannelErrorReason.UnknownBufferId;
                return;
            }

            if (r.Mapping >= 0)
            {
                Mappings[r.Mapping].Registered = false; // stays mapped while a lease is out
            }

            Last = r.Mapping >= 0 ? "peer forgot, mapped" : "peer forgot";
        }

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
            int mappings = 0;
            foreach ((long _, int mapping) in Registered.Values)
            {
                if (mapping >= 0)
                {
                    Mappings[mapping].Registered = false;
                    mappings++;
                }
            }

            Registered.Clear();
            _held.Clear();
            Last = $"closed, {mappings} mappings";
        }

        public override string ToString()
        {
            var s = new StringBuilder();
            s.Append($"last '{Last}', registered [{string.Join(",", Registered.OrderBy(r => r.Key).Select(r => $"{r.Key}:{r.Value.Size}/m{r.Value.Mapping}"))}], ");
            s.Append($"resident {ResidentBytes}, closed {Closed}, unmapped [{string.Join(",", Mappings.Select(m => m.IsUnmapped ? 1 : 0))}], ");
            s.Append($"live views [{string.Join(",", Views.Select(v => v.Live ? 1 : 0))}]");
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

        internal sealed class MappingState
        {
            public long Size { get; init; }

            public bool Registered { get; set; }

            public int Leases { get; set; }

            /// <summary>The unmap has run: the registration ended and no lease is out.</summary>
            public bool IsUnmapped => !Registered && Leases == 0;
        }

        internal sealed class ViewState
        {
            public int Mapping { get; init; }

            public bool Live { get; set; }
        }
    }
}

using System.Text;
using CsCheck;

namespace DmaBuf.Linux.Tests;

/// <summary>
/// One pool behind two real channels against a plain model: random sequences of rents, a caller's holds and returns,
/// sends of any pool buffer (rented or not) on either channel, the consumers' releases of any delivery they hold, and
/// the close of a whole connection (then a new one in its place). The model says when a buffer is rented and when it is
/// free: it is free once no channel has a delivery of it out and no caller's hold is left, and a renter's give-back
/// frees it only when nothing holds it. Checked after every step: each call's result (the rented buffer, true or
/// false, a refused send, whether a release returned the frame), which buffers are rented, how many are free, and the
/// order the pool hands them out in (least recently returned first). At the end, nothing is left.
/// </summary>
public sealed class SharedPoolModelTests
{
    private const int Buffers = 3;
    private const int Channels = 2;
    private const long Size = 4096;

    private static readonly long Iterations =
        long.TryParse(Environment.GetEnvironmentVariable("DMABUF_CHANNEL_MODEL_ITERATIONS"), out long n) && n > 0 ? n : 1000;

    private static readonly TimeSpan s_guard = Background<int>.Guard;

    private static readonly List<Actual> s_worlds = [];

    [Fact]
    public void PoolHolds_AgreeWithAPlainModel_AfterEveryStep_AndNothingIsLeft()
    {
        using (new Actual())
        {
            // warms the paths (first mappings, the runtime's socket code) before the snapshot
        }

        ProcessSnapshot before = ProcessSnapshot.Take();
        try
        {
            Gen.Const(0).Select(_ => (new Actual(), new Model()))
                .SampleModelBased(
                    [
                        Gen.Const(0).Operation<Actual, Model>(_ => "Rent", (a, _) => a.Rent(), (m, _) => m.Rent()),
                        Gen.Int[0, Buffers - 1].Operation<Actual, Model>(b => $"Hold(buffer {b})", (a, b) => a.Hold(b), (m, b) => m.Hold(b)),
                        Gen.Int[0, Buffers - 1].Operation<Actual, Model>(b => $"Return(buffer {b})", (a, b) => a.Return(b), (m, b) => m.Return(b)),
                        Gen.Select(Gen.Int[0, Channels - 1], Gen.Int[0, Buffers - 1]).Operation<Actual, Model>(
                            p => $"Send(channel {p.Item1}, buffer {p.Item2})", (a, p) => a.Send(p.Item1, p.Item2), (m, p) => m.Send(p.Item1, p.Item2)),
                        Gen.Select(Gen.Int[0, Channels - 1], Gen.Int[0, 3]).Operation<Actual, Model>(
                            p => $"Release(channel {p.Item1}, delivery {p.Item2})", (a, p) => a.Release(p.Item1, p.Item2), (m, p) => m.Release(p.Item1, p.Item2)),
                        Gen.Int[0, Channels - 1].Operation<Actual, Model>(k => $"Close(channel {k})", (a, k) => a.Close(k), (m, k) => m.Close(k)),
                    ],
                    equal: Agree,
                    iter: Iterations,
                    threads: 1,
                    seed: Environment.GetEnvironmentVariable("DMABUF_LEDGER_SEED"),
                    printActual: a => a.ToString(),
                    printModel: m => m.ToString());
        }
        finally
        {
            lock (s_worlds)
            {
                s_worlds.ForEach(w => w.Dispose());
                s_worlds.Clear();
            }
        }

        before.AssertNothingHeldSince("after every sequence's pool, channels and deliveries were disposed");
    }

    private static bool Agree(Actual a, Model m)
    {
        if (a.Last != m.Last || a.Pool.Available != m.Free.Count)
        {
            return false;
        }

        for (int b = 0; b < Buffers; b++)
        {
            if (a.Pool.IsRented(a.Id(b)) != m.Rented[b])
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>A pool of three buffers and two connections that return to it, each with its consumer's deliveries.</summary>
    internal sealed class Actual : IDisposable
    {
        private readonly BufferChannel[] _producers = new BufferChannel[Channels];
        private readonly BufferChannel[] _consumers = new BufferChannel[Channels];
        private readonly List<ReceivedBuffer>[] _held = [[], []];
        private readonly ImportCache _imports = new(new MmapCache());

        public Actual()
        {
            Pool = BufferPool.Allocate(new MemfdExporter(new MmapCache()), Buffers, Size);
            for (int k = 0; k < Channels; k++)
            {
                Open(k);
            }

            lock (s_worlds)
            {
                // One sequence at a time (threads: 1): the worlds before this one are done, and their descriptors go now,
                // not at the end (thousands of sequences would run out of descriptors).
                s_worlds.ForEach(w => w.Dispose());
                s_worlds.Clear();
                s_worlds.Add(this);
            }
        }

        public BufferPool Pool { get; }

        public string Last { get; private set; } = "";

        public long Id(int b) => Pool.Buffers[b].BufferId;

        public void Rent() => Last = Pool.TryRent(out DmaBufHandle? frame) ? $"rented {IndexOf(frame.BufferId)}" : "none free";

        public void Hold(int b) => Last = Pool.Hold(Id(b)).ToString();

        public void Return(int b) => Last = Pool.Return(Id(b)).ToString();

        public void Send(int k, int b)
        {
            try
            {
                _producers[k].SendBuffer(Pool.Buffers[b]);
            }
            catch (InvalidOperationException)
            {
                Last = "refused: not rented";
                return;
            }

            _held[k].Add(Assert.IsType<ReceivedBuffer>(_consumers[k].Receive(s_guard)));
            Last = "sent";
        }

        public void Release(int k, int j)
        {
            if (j >= _held[k].Count)
            {
                Last = "nothing held";
                return;
            }

            ReceivedBuffer delivery = _held[k][j];
            _held[k].RemoveAt(j);
            delivery.Dispose();
            var released = Assert.IsType<BufferReleased>(_producers[k].Receive(s_guard));
            Last = $"released {IndexOf(released.BufferId)}, returned {released.ReturnedToPool}";
        }

        public void Close(int k)
        {
            _producers[k].Dispose(); // with deliveries out: close lets go of this channel's holds
            Drop(k);
            Open(k);
            Last = "closed";
        }

        public override string ToString()
        {
            var s = new StringBuilder($"last: {Last}; free {Pool.Available}; rented");
            for (int b = 0; b < Buffers; b++)
            {
                s.Append(Pool.IsRented(Id(b)) ? $" {b}" : "");
            }

            for (int k = 0; k < Channels; k++)
            {
                s.Append($"; channel {k} holds [{string.Join(",", _held[k].Select(d => IndexOf(d.RemoteBufferId)))}]");
            }

            return s.ToString();
        }

        public void Dispose()
        {
            for (int k = 0; k < Channels; k++)
            {
                _producers[k].Dispose();
                Drop(k);
            }

            Pool.Dispose();
        }

        private int IndexOf(long id)
        {
            for (int b = 0; b < Buffers; b++)
            {
                if (Id(b) == id)
                {
                    return b;
                }
            }

            return -1;
        }

        private void Open(int k) =>
            (_producers[k], _consumers[k]) = BufferChannel.CreatePair(
                new BufferChannelOptions { ReturnTo = Pool }, new BufferChannelOptions { ImportCache = _imports });

        private void Drop(int k)
        {
            _held[k].ForEach(d => d.Dispose());
            _held[k].Clear();
            _consumers[k].Dispose();
        }
    }

    /// <summary>The plain model: per buffer, rented or free, a caller's holds, and each channel's deliveries out.</summary>
    internal sealed class Model
    {
        private readonly int[] _callers = new int[Buffers];
        private readonly List<int>[] _held = [[], []]; // per channel, the buffer of each delivery the consumer holds

        public Model()
        {
            for (int b = 0; b < Buffers; b++)
            {
                Free.Enqueue(b);
            }
        }

        public Queue<int> Free { get; } = new();

        public bool[] Rented { get; } = new bool[Buffers];

        public string Last { get; private set; } = "";

        public void Rent()
        {
            if (Free.TryDequeue(out int b))
            {
                Rented[b] = true;
                Last = $"rented {b}";
            }
            else
            {
                Last = "none free";
            }
        }

        public void Hold(int b)
        {
            if (Rented[b])
            {
                _callers[b]++;
            }

            Last = Rented[b].ToString();
        }

        public void Return(int b)
        {
            if (!Rented[b])
            {
                Last = "False";
                return;
            }

            if (_callers[b] > 0)
            {
                _callers[b]--;
            }
            else if (OutWithAChannel(b))
            {
                Last = "False"; // the renter's give-back cannot drop a channel's hold
                return;
            }

            FreeIfUnheld(b);
            Last = "True";
        }

        public void Send(int k, int b)
        {
            if (!Rented[b] && !_held[k].Contains(b))
            {
                Last = "refused: not rented";
                return;
            }

            _held[k].Add(b);
            Last = "sent";
        }

        public void Release(int k, int j)
        {
            if (j >= _held[k].Count)
            {
                Last = "nothing held";
                return;
            }

            int b = _held[k][j];
            _held[k].RemoveAt(j);
            bool returned = !_held[k].Contains(b) && FreeIfUnheld(b);
            Last = $"released {b}, returned {returned}";
        }

        public void Close(int k)
        {
            // Each delivery out holds its buffer; close lets go of them in the order they went out, so a buffer is free
            // again when its newest delivery's hold goes.
            var deliveries = _held[k].ToList();
            for (int j = 0; j < deliveries.Count; j++)
            {
                _held[k].RemoveAt(0);
                if (!_held[k].Contains(deliveries[j]))
                {
                    FreeIfUnheld(deliveries[j]);
                }
            }

            Last = "closed";
        }

        public override string ToString() =>
            $"last: {Last}; free {Free.Count} [{string.Join(",", Free)}]; rented{string.Concat(Enumerable.Range(0, Buffers).Where(b => Rented[b]).Select(b => $" {b}"))}; " +
            $"holds [{string.Join(",", _callers)}]; " + string.Join("; ", Enumerable.Range(0, Channels).Select(k => $"channel {k} holds [{string.Join(",", _held[k])}]"));

        private bool OutWithAChannel(int b) => _held.Any(h => h.Contains(b));

        private bool FreeIfUnheld(int b)
        {
            if (!Rented[b] || _callers[b] > 0 || OutWithAChannel(b))
            {
                return false;
            }

            Rented[b] = false;
            Free.Enqueue(b);
            return true;
        }
    }
}

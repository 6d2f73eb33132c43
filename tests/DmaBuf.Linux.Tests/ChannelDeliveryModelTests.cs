using System.Text;
using CsCheck;

namespace DmaBuf.Linux.Tests;

/// <summary>
/// A channel's receive side against a plain model, with a raw socket as the peer: random sequences of the peer's
/// buffer messages (mostly as an honest peer sends them, the descriptor first and then the id; one in five a fault: the
/// descriptor again, an id never sent with it, a wrong size, a memfd posing as the fence, or the fence flag and no
/// fence descriptor), its forgets (now and then of an id it never registered), and our reads of each delivery's frame,
/// waits for its fence, and disposals. Checked after every step: the result (a delivery, or
/// the typed reason that closed the connection), whether the connection is closed and why, the registrations, and for
/// every delivery ever received whether its frame reads the sender's bytes or is refused, as the model says (a delivery
/// keeps its frame through the peer's forget and through close, until its own Dispose). At the end, with every channel
/// disposed, no descriptor or mapping is left.
/// </summary>
/// <remarks>A real sync_file needs sw_sync, a dma-heap or udmabuf, which a plain test machine may lack, so a fence
/// that really is one is covered by the kernel tests' CrossProcessFenceTests; here every delivery that gets through
/// has none.</remarks>
public sealed class ChannelDeliveryModelTests
{
    private const long Page = 4096;

    // 300 random sequences in CI (each opens a socket pair and maps real memfds); a longer run sets
    // DMABUF_CHANNEL_MODEL_ITERATIONS.
    private static readonly long Iterations =
        long.TryParse(Environment.GetEnvironmentVariable("DMABUF_CHANNEL_MODEL_ITERATIONS"), out long n) && n > 0 ? n : 300;

    private static readonly TimeSpan s_guard = Background<int>.Guard;

    private static readonly List<Actual> s_worlds = [];

    internal enum FenceSent
    {
        None,
        MemfdAsFence,
        FlagWithoutDescriptor,
    }

    [Fact]
    public void Deliveries_AgreeWithAPlainModel_AfterEveryStep_AndNothingIsLeft()
    {
        using (var warm = new Actual())
        {
            warm.PeerBuffer(1, withFd: true, wrongSize: false, FenceSent.None);
            warm.PeerBuffer(1, withFd: false, wrongSize: false, FenceSent.MemfdAsFence);
        }

        ProcessSnapshot before = ProcessSnapshot.Take();
        try
        {
            Gen.Bool.Select(acknowledge => (new Actual(acknowledge), new Model()))
                .SampleModelBased(
                    [
                        Gen.Select(Gen.Int[1, 3], Gen.Int[0, 19]).Operation<Actual, Model>(
                            p => $"PeerSend({p.Item1}, {Choice(p.Item2)})", (a, p) => a.PeerSend(p.Item1, p.Item2), (m, p) => m.PeerSend(p.Item1, p.Item2)),
                        Gen.Select(Gen.Int[1, 3], Gen.Int[0, 9]).Operation<Actual, Model>(
                            p => $"PeerForget({p.Item1}{(p.Item2 == 0 ? ", even if not registered" : "")})",
                            (a, p) => a.PeerForget(p.Item1, p.Item2 == 0),
                            (m, p) => m.PeerForget(p.Item1, p.Item2 == 0)),
                        Gen.Int[0, 7].Operation<Actual, Model>(k => $"Read(delivery {k})", (a, k) => a.Read(k), (m, k) => m.Read(k)),
                        Gen.Int[0, 7].Operation<Actual, Model>(k => $"WaitForFence(delivery {k})", (a, k) => a.WaitForFence(k), (m, k) => m.WaitForFence(k)),
                        Gen.Int[0, 7].Operation<Actual, Model>(k => $"Dispose(delivery {k})", (a, k) => a.Dispose(k), (m, k) => m.Dispose(k)),
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

        before.AssertNothingHeldSince("after every sequence's channel and deliveries were disposed");
    }

    // Mostly what an honest peer sends (the descriptor on a buffer's first send, then its id), one in five a fault, so
    // that most sequences go on long after their first delivery.
    private static (bool WithFd, bool WrongSize, FenceSent Fence) Choose(bool registered, int k) => k switch
    {
        0 => (registered, false, FenceSent.None), // the descriptor again, or an id never sent with it
        1 => (!registered, true, FenceSent.None), // an id-only send of the wrong size
        2 => (!registered, false, FenceSent.MemfdAsFence),
        3 => (!registered, false, FenceSent.FlagWithoutDescriptor),
        _ => (!registered, false, FenceSent.None),
    };

    private static string Choice(int k) => k switch
    {
        0 => "the descriptor when registered, the id when not",
        1 => "wrong size",
        2 => "a memfd as the fence",
        3 => "the fence flag without its descriptor",
        _ => "honest",
    };

    private static long SizeOf(long id) => id * Page;

    private static byte PatternOf(long id) => (byte)(0x30 + id);

    private static bool Agree(Actual a, Model m)
    {
        BufferChannel c = a.Peer.Channel;
        if (a.Last != m.Last || c.IsClosed != m.Closed || c.CloseReason != m.CloseReason || c.RegisteredBuffers != m.Registered.Count
            || a.Deliveries.Count != m.Deliveries.Count)
        {
            return false;
        }

        // Acknowledging on receipt: exactly one acknowledgement per delivery the channel held, none for what it refused.
        if (a.AcknowledgesOnReceipt && !a.Acknowledged.SequenceEqual(m.Deliveries.Select(d => d.Id)))
        {
            return false;
        }

        for (int k = 0; k < a.Deliveries.Count; k++)
        {
            (ReceivedBuffer got, bool disposed) = a.Deliveries[k];
            if (disposed != m.Deliveries[k].Disposed || got.RemoteBufferId != m.Deliveries[k].Id || got.Fence is not null || !got.HasFrame)
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>The channel under test with a raw peer, and what the application holds.</summary>
    internal sealed class Actual : IDisposable
    {
        private readonly MemfdExporter _exporter = new(new MmapCache());
        private readonly HashSet<long> _peerRegistered = [];
        private readonly System.Net.Sockets.Socket? _peerReads; // what the peer sent with its descriptor and did not forget
        private long _sequence;
        private string _summary = "nothing done";

        public Actual(bool acknowledgeOnReceipt = false)
        {
            AcknowledgesOnReceipt = acknowledgeOnReceipt;
            Peer = new RawPeer(new BufferChannelOptions { ImportCache = new ImportCache(new MmapCache()), AcknowledgeOnReceipt = acknowledgeOnReceipt });
            if (acknowledgeOnReceipt)
            {
                // The peer's end, read without waiting after every step: what the channel acknowledged on its own.
                _peerReads = new System.Net.Sockets.Socket(new System.Net.Sockets.SafeSocketHandle(Peer.Socket.DangerousGetHandle(), ownsHandle: false))
                {
                    Blocking = false,
                };
            }

            lock (s_worlds)
            {
                // One sequence at a time (threads: 1): the ones before this are over, so their descriptors go now.
                s_worlds.ForEach(w => w.Dispose());
                s_worlds.Clear();
                s_worlds.Add(this);
            }
        }

        public RawPeer Peer { get; }

        /// <summary>Whether the channel acknowledges every delivery it holds (<see cref="BufferChannelOptions.AcknowledgeOnReceipt"/>).</summary>
        public bool AcknowledgesOnReceipt { get; }

        /// <summary>The buffer ids of the acknowledgements the peer read, in order (only when the channel acknowledges on receipt).</summary>
        public List<long> Acknowledged { get; } = [];

        /// <summary>Every delivery received, and whether the application disposed it.</summary>
        public List<(ReceivedBuffer Buffer, bool Disposed)> Deliveries { get; } = [];

        public string Last { get; private set; } = "";

        /// <summary>A send as the peer would choose it from what it registered with us (<see cref="Choose"/>).</summary>
        public void PeerSend(long id, int k)
        {
            (bool withFd, bool wrongSize, FenceSent fence) = Choose(_peerRegistered.Contains(id), k);
            PeerBuffer(id, withFd, wrongSize, fence);
            if (Last == $"delivered {id}, fd True")
            {
                _peerRegistered.Add(id);
            }

            ForgetAllIfClosed();
        }

        public void PeerForget(long id, bool evenIfNotRegistered)
        {
            if (!evenIfNotRegistered && !_peerRegistered.Contains(id))
            {
                Do(() => "nothing to forget");
                return;
            }

            PeerForget(id);
            _peerRegistered.Remove(id);
            ForgetAllIfClosed();
        }

        public void PeerBuffer(long id, bool withFd, bool wrongSize, FenceSent fence) => FromPeer(() =>
        {
            MessageFlags flags = (withFd ? MessageFlags.FdAttached : MessageFlags.None) | (fence == FenceSent.None ? MessageFlags.None : MessageFlags.FenceAttached);
            long size = wrongSize && !withFd ? SizeOf(id) + Page : SizeOf(id);
            byte[] message = RawPeer.Encode(new WireMessage(MessageType.Buffer, flags, id, ++_sequence, size, (ulong)id));
            using DmaBufHandle buffer = _exporter.Allocate(SizeOf(id));
            using (CpuMapping w = buffer.MapCpu())
            {
                w.Span.Fill(PatternOf(id));
            }

            using SafeFdHandle notAFence = RawPeer.SealedMemfd(Page);
            var fds = new List<SafeFdHandle>();
            if (withFd)
            {
                fds.Add(buffer.Buffer.GetLinuxBuffer().Fd);
            }

            if (fence == FenceSent.MemfdAsFence)
            {
                fds.Add(notAFence);
            }

            Peer.Send(message, [.. fds]);
            var got = (ReceivedBuffer)Peer.Channel.Receive(s_guard)!;
            Deliveries.Add((got, false));
            return $"delivered {got.RemoteBufferId}, fd {got.CarriedFd}";
        });

        public void PeerForget(long id) => FromPeer(() =>
        {
            Peer.Send(RawPeer.Encode(new WireMessage(MessageType.Forget, BufferId: id)));
            try
            {
                Peer.Channel.Receive(TimeSpan.Zero);
                return "a message came";
            }
            catch (TimeoutException)
            {
                return "forgot"; // handled; nothing for the application
            }
        });

        public void Read(int k) => Do(() =>
        {
            if (Deliveries.Count == 0)
            {
                return "none";
            }

            ReceivedBuffer got = Deliveries[k % Deliveries.Count].Buffer;
            try
            {
                Span<byte> bytes = got.Frame.Span;
                return $"read {bytes.Length} x {bytes[0]:x2}..{bytes[^1]:x2}";
            }
            catch (ObjectDisposedException)
            {
                return "disposed";
            }
        });

        public void WaitForFence(int k) => Do(() =>
        {
            if (Deliveries.Count == 0)
            {
                return "none";
            }

            try
            {
                return Deliveries[k % Deliveries.Count].Buffer.WaitForFence(TimeSpan.Zero) ? "signaled" : "not signaled";
            }
            catch (ObjectDisposedException)
            {
                return "disposed";
            }
        });

        public void Dispose(int k) => Do(() =>
        {
            if (Deliveries.Count == 0)
            {
                return "none";
            }

            int i = k % Deliveries.Count;
            Deliveries[i].Buffer.Dispose(); // again when disposed before: a no-op
            Deliveries[i] = (Deliveries[i].Buffer, true);
            return "disposed";
        });

        public void Dispose()
        {
            Deliveries.ForEach(d => d.Buffer.Dispose());
            _peerReads?.Dispose(); // does not own the descriptor: the peer closes it
            Peer.Dispose();
        }

        // Taken after each step: a later sequence disposes this one's channel before CsCheck prints it.
        public override string ToString() => _summary;

        private string Summary() =>
            $"last '{Last}', acknowledged [{string.Join(",", Acknowledged)}] of {(AcknowledgesOnReceipt ? "every delivery" : "none")}, closed {Peer.Channel.IsClosed} ({Peer.Channel.CloseReason}), registered {Peer.Channel.RegisteredBuffers}, " +
            $"deliveries [{string.Join(",", Deliveries.Select(d => $"{d.Buffer.RemoteBufferId}{(d.Disposed ? "x" : "")}"))}]";

        private void ForgetAllIfClosed()
        {
            if (Peer.Channel.IsClosed)
            {
                _peerRegistered.Clear(); // the peer sees its connection end
            }
        }

        /// <summary>Reads what came to the peer without waiting; every acknowledgement must be of a delivery of this sequence.</summary>
        private void ReadAcknowledgements()
        {
            if (_peerReads is null)
            {
                return;
            }

            byte[] record = new byte[ChannelSocket.MaxRecord];
            while (true)
            {
                int length;
                try
                {
                    length = _peerReads.Receive(record);
                }
                catch (System.Net.Sockets.SocketException e) when (e.SocketErrorCode == System.Net.Sockets.SocketError.WouldBlock)
                {
                    return;
                }

                if (length == 0)
                {
                    return; // the channel closed its end
                }

                WireMessage m = WireFormat.Decode(record.AsSpan(0, length), 0);
                if (m.Type == MessageType.Ack)
                {
                    Acknowledged.Add(m.BufferId);
                }
            }
        }

        // The peer's messages go nowhere after close; the application's steps still work.
        private void FromPeer(Func<string> step) => Do(Peer.Channel.IsClosed ? () => "closed" : step);

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

            ReadAcknowledgements();
            _summary = Summary();
        }
    }

    /// <summary>What the receive side should do, in the plainest terms.</summary>
    internal sealed class Model
    {
        public HashSet<long> Registered { get; } = [];

        public List<(long Id, bool Disposed)> Deliveries { get; } = [];

        public bool Closed { get; private set; }

        public ChannelErrorReason CloseReason { get; private set; }

        public string Last { get; private set; } = "";

        public void PeerSend(long id, int k)
        {
            (bool withFd, bool wrongSize, FenceSent fence) = Choose(Registered.Contains(id), k);
            PeerBuffer(id, withFd, wrongSize, fence);
        }

        public void PeerForget(long id, bool evenIfNotRegistered)
        {
            if (!evenIfNotRegistered && !Registered.Contains(id))
            {
                Last = "nothing to forget";
                return;
            }

            PeerForget(id);
        }

        public void PeerBuffer(long id, bool withFd, bool wrongSize, FenceSent fence)
        {
            if (Closed)
            {
                Last = "closed";
            }
            else if (fence == FenceSent.FlagWithoutDescriptor)
            {
                Refuse(ChannelErrorReason.MissingFd); // the count of descriptors is checked first
            }
            else if (fence == FenceSent.MemfdAsFence)
            {
                Refuse(ChannelErrorReason.NotASyncFile); // then the fence, before the buffer is looked at
            }
            else if (withFd && Registered.Contains(id))
            {
                Refuse(ChannelErrorReason.DuplicateBufferId);
            }
            else if (!withFd && !Registered.Contains(id))
            {
                Refuse(ChannelErrorReason.UnknownBufferId);
            }
            else if (!withFd && wrongSize)
            {
                Refuse(ChannelErrorReason.BadBufferSize);
            }
            else
            {
                Registered.Add(id);
                Deliveries.Add((id, false));
                Last = $"delivered {id}, fd {withFd}";
            }
        }

        public void PeerForget(long id)
        {
            if (Closed)
            {
                Last = "closed";
            }
            else if (!Registered.Remove(id))
            {
                Refuse(ChannelErrorReason.UnknownBufferId);
            }
            else
            {
                Last = "forgot";
            }
        }

        public void Read(int k)
        {
            if (Deliveries.Count == 0)
            {
                Last = "none";
                return;
            }

            (long id, bool disposed) = Deliveries[k % Deliveries.Count];
            byte p = PatternOf(id);
            Last = disposed ? "disposed" : $"read {SizeOf(id)} x {p:x2}..{p:x2}"; // through forget and close alike
        }

        public void WaitForFence(int k) =>
            Last = Deliveries.Count == 0 ? "none" : Deliveries[k % Deliveries.Count].Disposed ? "disposed" : "signaled";

        public void Dispose(int k)
        {
            if (Deliveries.Count == 0)
            {
                Last = "none";
                return;
            }

            int i = k % Deliveries.Count;
            Deliveries[i] = (Deliveries[i].Id, true);
            Last = "disposed";
        }

        public override string ToString()
        {
            var s = new StringBuilder();
            s.Append($"last '{Last}', closed {Closed} ({CloseReason}), registered [{string.Join(",", Registered.Order())}], ");
            s.Append($"deliveries [{string.Join(",", Deliveries.Select(d => $"{d.Id}{(d.Disposed ? "x" : "")}"))}]");
            return s.ToString();
        }

        private void Refuse(ChannelErrorReason reason)
        {
            Closed = true;
            CloseReason = reason;
            Registered.Clear();
            Last = "refused " + reason;
        }
    }
}

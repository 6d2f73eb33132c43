using System.Text;
using CsCheck;

namespace DmaBuf.Linux.Tests;

/// <summary>
/// A channel's receive side against a plain model, with a raw peer on each transport: random sequences of the peer's
/// buffer messages (mostly as an honest peer sends them, the descriptor first and then the id; one in five a fault),
/// its forgets (now and then of an id it never registered), and our reads of each delivery's frame, waits for its
/// fence, and disposals. On the socket the faults are the descriptor again, an id never sent with it, a wrong size, a
/// memfd posing as the fence, or the fence flag and no fence descriptor. On the ring the peer sends a descriptor as a
/// socket record and then a ring entry that says so, and everything else as a ring entry only; its faults are the first
/// three as on the socket, then the ring's own: a fence flag on an entry, a descriptor record that says other than its
/// entry, an entry whose descriptor never comes (or whose peer dies first), a buffer message on the socket, a
/// sequence going back. Checked after every step: the result (a delivery, or
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

    // 300 random sequences per transport in CI (each opens a socket pair, on the ring also both rings, and maps real
    // memfds); a longer run sets DMABUF_CHANNEL_MODEL_ITERATIONS.
    private static readonly long Iterations =
        long.TryParse(Environment.GetEnvironmentVariable("DMABUF_CHANNEL_MODEL_ITERATIONS"), out long n) && n > 0 ? n : 300;

    private static readonly TimeSpan s_guard = Background<int>.Guard;

    // The ring's wait for a descriptor its entry announced: short, as a sequence that hits that fault waits it out.
    // Nothing else waits for it here: the peer's records are in the socket before their entries, and the peer takes
    // the channel's entries after every step, so its ring always has room.
    private static readonly TimeSpan s_ringSendTimeout = TimeSpan.FromMilliseconds(30);

    private static readonly List<Actual> s_worlds = [];

    /// <summary>What is wrong with a buffer message besides its descriptor (sent or not), if anything: a wrong size on either transport, the rest on one only.</summary>
    internal enum Fault
    {
        None,
        WrongSize,                  // an id-only send claims a size other than the registration's
        MemfdAsFence,               // socket: a sealed memfd where the fence's sync_file goes
        FenceFlagWithoutDescriptor, // socket: the fence flag, and no fence descriptor
        FenceFlagOnEntry,           // ring: the fence flag on the entry (the ring carries no fences)
        RecordSaysOther,            // ring: the descriptor's record differs from its entry in one field
        DescriptorNeverSent,        // ring: the entry announces a descriptor that never comes
        DiesBeforeDescriptor,       // ring: the entry announces a descriptor, then the peer dies
        OnTheSocket,                // ring: an id-only buffer message as a socket record, not a ring entry
        SequenceGoingBack,          // ring: a buffer entry with the last sequence again (0 on the first)
    }

    [Theory]
    [InlineData(ChannelTransport.Socket)]
    [InlineData(ChannelTransport.Ring)]
    public void Deliveries_AgreeWithAPlainModel_AfterEveryStep_AndNothingIsLeft(ChannelTransport transport)
    {
        using (var warm = new Actual(transport))
        {
            warm.PeerBuffer(1, withFd: true, Fault.None);
            warm.PeerBuffer(1, withFd: false, transport == ChannelTransport.Ring ? Fault.FenceFlagOnEntry : Fault.MemfdAsFence);
        }

        ProcessSnapshot before = ProcessSnapshot.Take();
        try
        {
            Gen.Bool.Select(acknowledge => (new Actual(transport, acknowledge), new Model(transport)))
                .SampleModelBased(
                    [
                        Gen.Select(Gen.Int[1, 3], Gen.Int[0, (5 * FaultCount(transport)) - 1]).Operation<Actual, Model>(
                            p => $"PeerSend({p.Item1}, {Choice(transport, p.Item2)})", (a, p) => a.PeerSend(p.Item1, p.Item2), (m, p) => m.PeerSend(p.Item1, p.Item2)),
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

    // Faults per transport: k below this many picks one, so with k up to five times it, one send in five is a fault.
    private static int FaultCount(ChannelTransport transport) => transport == ChannelTransport.Ring ? 8 : 4;

    // Mostly what an honest peer sends (the descriptor on a buffer's first send, then its id), one in five a fault, so
    // that most sequences go on long after their first delivery.
    private static (bool WithFd, Fault Fault) Choose(ChannelTransport transport, bool registered, int k) => (transport, k) switch
    {
        (_, 0) => (registered, Fault.None), // the descriptor again, or an id never sent with it
        (_, 1) => (!registered, Fault.WrongSize), // wrong only on an id-only send
        (ChannelTransport.Socket, 2) => (!registered, Fault.MemfdAsFence),
        (ChannelTransport.Socket, 3) => (!registered, Fault.FenceFlagWithoutDescriptor),
        (ChannelTransport.Ring, 2) => (!registered, Fault.FenceFlagOnEntry),
        (ChannelTransport.Ring, 3) => (true, Fault.RecordSaysOther),
        (ChannelTransport.Ring, 4) => (true, Fault.DescriptorNeverSent),
        (ChannelTransport.Ring, 5) => (true, Fault.DiesBeforeDescriptor),
        (ChannelTransport.Ring, 6) => (false, Fault.OnTheSocket),
        (ChannelTransport.Ring, 7) => (!registered, Fault.SequenceGoingBack),
        _ => (!registered, Fault.None),
    };

    private static string Choice(ChannelTransport transport, int k) => (transport, k) switch
    {
        (_, 0) => "the descriptor when registered, the id when not",
        (_, 1) => "wrong size",
        (ChannelTransport.Socket, 2) => "a memfd as the fence",
        (ChannelTransport.Socket, 3) => "the fence flag without its descriptor",
        (ChannelTransport.Ring, 2) => "the fence flag on the entry",
        (ChannelTransport.Ring, 3) => "a descriptor record that says other than its entry",
        (ChannelTransport.Ring, 4) => "an entry whose descriptor never comes",
        (ChannelTransport.Ring, 5) => "an entry whose descriptor never comes, and the peer dies",
        (ChannelTransport.Ring, 6) => "the id on the socket",
        (ChannelTransport.Ring, 7) => "the last sequence again",
        _ => "honest",
    };

    private static long SizeOf(long id) => id * Page;

    private static byte PatternOf(long id) => (byte)(0x30 + id);

    private static bool Agree(Actual a, Model m)
    {
        BufferChannel c = a.Channel;
        if (a.Last != m.Last || c.IsClosed != m.Closed || c.CloseReason != m.CloseReason || c.RegisteredBuffers != m.Registered.Count
            || a.Deliveries.Count != m.Deliveries.Count)
        {
            return false;
        }

        // Acknowledging on receipt: exactly one acknowledgement per delivery the channel held, none for what it refused;
        // none at all when not (the ring's peer reads the channel's entries either way).
        if (a.ReadsAcknowledgements && !a.Acknowledged.SequenceEqual(a.AcknowledgesOnReceipt ? m.Deliveries.Select(d => d.Id) : []))
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

    /// <summary>The channel under test with a raw peer of its transport, and what the application holds.</summary>
    internal sealed class Actual : IDisposable
    {
        private readonly MemfdExporter _exporter = new(new MmapCache());
        private readonly HashSet<long> _peerRegistered = [];
        private readonly RawPeer? _socketPeer;
        private readonly RawRingPeer? _ringPeer;
        private readonly System.Net.Sockets.Socket? _peerReads; // the socket peer's end, read when acknowledging
        private long _sequence;
        private string _summary = "nothing done";

        public Actual(ChannelTransport transport, bool acknowledgeOnReceipt = false)
        {
            AcknowledgesOnReceipt = acknowledgeOnReceipt;
            if (transport == ChannelTransport.Ring)
            {
                _ringPeer = new RawRingPeer(new BufferChannelOptions
                {
                    ImportCache = new ImportCache(new MmapCache()), AcknowledgeOnReceipt = acknowledgeOnReceipt,
                    Transport = ChannelTransport.Ring, Wait = RingWait.Hybrid, SendTimeout = s_ringSendTimeout,
                });
                Channel = _ringPeer.Channel;
            }
            else
            {
                _socketPeer = new RawPeer(new BufferChannelOptions { ImportCache = new ImportCache(new MmapCache()), AcknowledgeOnReceipt = acknowledgeOnReceipt });
                Channel = _socketPeer.Channel;
                if (acknowledgeOnReceipt)
                {
                    // The peer's end, read without waiting after every step: what the channel acknowledged on its own.
                    _peerReads = new System.Net.Sockets.Socket(new System.Net.Sockets.SafeSocketHandle(_socketPeer.Socket.DangerousGetHandle(), ownsHandle: false))
                    {
                        Blocking = false,
                    };
                }
            }

            lock (s_worlds)
            {
                // One sequence at a time (threads: 1): the ones before this are over, so their descriptors go now.
                s_worlds.ForEach(w => w.Dispose());
                s_worlds.Clear();
                s_worlds.Add(this);
            }
        }

        public BufferChannel Channel { get; }

        /// <summary>Whether the channel acknowledges every delivery it holds (<see cref="BufferChannelOptions.AcknowledgeOnReceipt"/>).</summary>
        public bool AcknowledgesOnReceipt { get; }

        /// <summary>
        /// Whether the peer reads what the channel sends it: on the socket only when acknowledging (else it never
        /// reads); on the ring always, as a peer that leaves the channel's entries fills the ring.
        /// </summary>
        public bool ReadsAcknowledgements => AcknowledgesOnReceipt || _ringPeer is not null;

        /// <summary>The buffer ids of the acknowledgements the peer read, in order.</summary>
        public List<long> Acknowledged { get; } = [];

        /// <summary>Every delivery received, and whether the application disposed it.</summary>
        public List<(ReceivedBuffer Buffer, bool Disposed)> Deliveries { get; } = [];

        public string Last { get; private set; } = "";

        /// <summary>A send as the peer would choose it from what it registered with us (<see cref="Choose"/>).</summary>
        public void PeerSend(long id, int k)
        {
            (bool withFd, Fault fault) = Choose(Channel.Transport, _peerRegistered.Contains(id), k);
            PeerBuffer(id, withFd, fault);
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

        public void PeerBuffer(long id, bool withFd, Fault fault) => FromPeer(() =>
        {
            using DmaBufHandle buffer = _exporter.Allocate(SizeOf(id));
            using (CpuMapping w = buffer.MapCpu())
            {
                w.Span.Fill(PatternOf(id));
            }

            using SafeFdHandle notAFence = RawPeer.SealedMemfd(Page);
            long size = fault == Fault.WrongSize && !withFd ? SizeOf(id) + Page : SizeOf(id);
            if (_ringPeer is not null)
            {
                SendOnTheRing(id, withFd, fault, size, buffer.Buffer.GetLinuxBuffer().Fd, notAFence);
            }
            else
            {
                bool fenced = fault is Fault.MemfdAsFence or Fault.FenceFlagWithoutDescriptor;
                MessageFlags flags = (withFd ? MessageFlags.FdAttached : MessageFlags.None) | (fenced ? MessageFlags.FenceAttached : MessageFlags.None);
                byte[] message = RawPeer.Encode(new WireMessage(MessageType.Buffer, flags, id, ++_sequence, size, (ulong)id));
                var fds = new List<SafeFdHandle>();
                if (withFd)
                {
                    fds.Add(buffer.Buffer.GetLinuxBuffer().Fd);
                }

                if (fault == Fault.MemfdAsFence)
                {
                    fds.Add(notAFence);
                }

                _socketPeer!.Send(message, [.. fds]);
            }

            var got = (ReceivedBuffer)Channel.Receive(s_guard)!;
            Deliveries.Add((got, false));
            return $"delivered {got.RemoteBufferId}, fd {got.CarriedFd}";
        });

        public void PeerForget(long id) => FromPeer(() =>
        {
            if (_ringPeer is not null)
            {
                _ringPeer.Publish(new RingEntry { Type = (uint)MessageType.Forget, BufferId = id });
            }
            else
            {
                _socketPeer!.Send(RawPeer.Encode(new WireMessage(MessageType.Forget, BufferId: id)));
            }

            try
            {
                Channel.Receive(TimeSpan.Zero);
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
            _socketPeer?.Dispose();
            _ringPeer?.Dispose();
        }

        // Taken after each step: a later sequence disposes this one's channel before CsCheck prints it.
        public override string ToString() => _summary;

        /// <summary>
        /// The ring's way of sending: the descriptor's record on the socket, then the entry that says so; an id-only send
        /// as the entry alone. Each fault breaks one of these rules.
        /// </summary>
        private void SendOnTheRing(long id, bool withFd, Fault fault, long size, SafeFdHandle descriptor, SafeFdHandle notAFence)
        {
            RawRingPeer peer = _ringPeer!;
            long sequence = fault == Fault.SequenceGoingBack ? _sequence : ++_sequence;
            MessageFlags flags = (withFd ? MessageFlags.FdAttached : MessageFlags.None) | (fault == Fault.FenceFlagOnEntry ? MessageFlags.FenceAttached : MessageFlags.None);
            var m = new WireMessage(MessageType.Buffer, flags, id, sequence, size, (ulong)id);
            if (fault == Fault.OnTheSocket)
            {
                peer.SendRecord(m);
                return;
            }

            if (withFd && fault is not (Fault.DescriptorNeverSent or Fault.DiesBeforeDescriptor))
            {
                // With the fence flag the record carries the memfd as its fence, so that it decodes and waits in the
                // channel's queue until close drops it.
                peer.SendRecord(fault == Fault.RecordSaysOther ? SaysOther(m) : m, descriptor, fault == Fault.FenceFlagOnEntry ? notAFence : null);
            }

            peer.Publish(new RingEntry
            {
                Type = (uint)m.Type, Flags = (uint)m.Flags, BufferId = m.BufferId, Sequence = m.Sequence, Size = m.Size, UserData = m.UserData,
            });
            if (fault == Fault.DiesBeforeDescriptor)
            {
                peer.Die();
            }
        }

        /// <summary>The message with one field changed, a different one each time: any difference must be refused.</summary>
        private WireMessage SaysOther(in WireMessage m) => (_sequence % 5) switch
        {
            0 => m with { BufferId = m.BufferId + 1 },
            1 => m with { Sequence = m.Sequence + 1 },
            2 => m with { Size = m.Size + Page },
            3 => m with { UserData = m.UserData + 1 },
            _ => m with { Flags = m.Flags | MessageFlags.Transient },
        };

        private string Summary() =>
            $"last '{Last}', acknowledged [{string.Join(",", Acknowledged)}] of {(AcknowledgesOnReceipt ? "every delivery" : "none")}, closed {Channel.IsClosed} ({Channel.CloseReason}), registered {Channel.RegisteredBuffers}, " +
            $"deliveries [{string.Join(",", Deliveries.Select(d => $"{d.Buffer.RemoteBufferId}{(d.Disposed ? "x" : "")}"))}]";

        private void ForgetAllIfClosed()
        {
            if (Channel.IsClosed)
            {
                _peerRegistered.Clear(); // the peer sees its connection end
            }
        }

        /// <summary>Reads what came to the peer without waiting; every acknowledgement must be of a delivery of this sequence.</summary>
        private void ReadAcknowledgements()
        {
            if (_ringPeer is not null)
            {
                // Releases (of disposed deliveries) come too; only the acknowledgements count.
                while (_ringPeer.TryTake(out RingEntry e))
                {
                    if (e.Type == (uint)MessageType.Ack)
                    {
                        Acknowledged.Add(e.BufferId);
                    }
                }

                return;
            }

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
        private void FromPeer(Func<string> step) => Do(Channel.IsClosed ? () => "closed" : step);

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
    internal sealed class Model(ChannelTransport transport)
    {
        public HashSet<long> Registered { get; } = [];

        public List<(long Id, bool Disposed)> Deliveries { get; } = [];

        public bool Closed { get; private set; }

        public ChannelErrorReason CloseReason { get; private set; }

        public string Last { get; private set; } = "";

        public void PeerSend(long id, int k)
        {
            (bool withFd, Fault fault) = Choose(transport, Registered.Contains(id), k);
            PeerBuffer(id, withFd, fault);
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

        public void PeerBuffer(long id, bool withFd, Fault fault)
        {
            if (Closed)
            {
                Last = "closed";
            }
            else if (fault == Fault.FenceFlagWithoutDescriptor)
            {
                Refuse(ChannelErrorReason.MissingFd); // the count of descriptors is checked first
            }
            else if (fault == Fault.MemfdAsFence)
            {
                Refuse(ChannelErrorReason.NotASyncFile); // then the fence, before the buffer is looked at
            }
            else if (fault is Fault.FenceFlagOnEntry or Fault.SequenceGoingBack)
            {
                // The entry's flags, then its sequence, before its record is looked for or the ledger asked: so even
                // an id never registered, or registered already, is a corrupt ring.
                Refuse(ChannelErrorReason.RingCorrupt);
            }
            else if (fault is Fault.RecordSaysOther or Fault.DescriptorNeverSent)
            {
                // The record must match its entry, and come within the send timeout, before the ledger sees the buffer.
                Refuse(ChannelErrorReason.RingCorrupt);
            }
            else if (fault == Fault.DiesBeforeDescriptor)
            {
                Refuse(ChannelErrorReason.PeerClosed); // the end of the socket, where the record was awaited
            }
            else if (fault == Fault.OnTheSocket)
            {
                Refuse(ChannelErrorReason.RingCorrupt); // on the ring transport only descriptors and pings come on the socket
            }
            else if (withFd && Registered.Contains(id))
            {
                Refuse(ChannelErrorReason.DuplicateBufferId);
            }
            else if (!withFd && !Registered.Contains(id))
            {
                Refuse(ChannelErrorReason.UnknownBufferId);
            }
            else if (!withFd && fault == Fault.WrongSize)
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

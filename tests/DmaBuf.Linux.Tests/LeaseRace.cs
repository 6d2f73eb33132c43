using System.Runtime.InteropServices;
using Microsoft.Coyote.Specifications;

namespace DmaBuf.Linux.Tests;

/// <summary>
/// The races of the consumer's lease path on the channel ledger, with no socket: a lease against the peer's forget, a
/// lease's disposal against close, a lease on one thread while another thread takes the same id's next delivery (the
/// pooled lease's generation), one lease disposed on two threads against the next delivery, and close against a lease. The mapping is a pinned array filled with a pattern, whose
/// unmap counts and poisons it, so a read through a lease after its mapping went sees the poison. The same code runs
/// under Coyote's scheduler from a rewritten copy of this assembly and of DmaBuf.Linux.dll (LeaseCoyoteTests).
/// </summary>
internal static class LeaseRace
{
    private const long Id = 5;
    private const int Size = 16;
    private const byte Pattern = 0x5A;
    private const byte Poison = 0xEE;

    /// <summary>
    /// A delivery leases the registration's mapping while the peer forgets it: the lease is refused (the forget came
    /// first) or reads the frame, never the poison; the mapping goes exactly once, after the lease is disposed.
    /// </summary>
    public static async Task LeaseVersusPeerForgetAsync()
    {
        var (ledger, reference, unmap) = Registered();
        Task lease = Task.Run(() =>
        {
            try
            {
                FrameLease l = ledger.LeaseRegistered(Id, Size)!;
                ReadLive(l, l.Generation, "a lease racing the peer's forget");
                l.Dispose(l.Generation);
            }
            catch (ChannelProtocolException e)
            {
                Specification.Assert(e.Reason == ChannelErrorReason.UnknownBufferId && !ledger.IsRegistered(Id), $"a lease refused with {e.Reason}");
            }
        });
        Task forget = Task.Run(() =>
        {
            ledger.OnPeerForget(Id, out FrameMapping? mapping).Dispose();
            Specification.Assert(mapping is not null, "the forget handed back no mapping");
            mapping!.Retire();
        });
        Task[] both = [lease, forget]; // an array: Coyote 1.7 controls the array overloads of WhenAll only
        await Task.WhenAll(both);

        AssertAllGoneOnce(ledger, reference, unmap);
    }

    /// <summary>
    /// A delivery disposes its lease while the channel closes: the frame reads right until the disposal, whatever the
    /// order, and the mapping goes exactly once, after both.
    /// </summary>
    public static async Task LeaseDisposeVersusCloseAsync()
    {
        var (ledger, reference, unmap) = Registered();
        FrameLease l = ledger.LeaseRegistered(Id, Size)!;
        long generation = l.Generation;
        Task dispose = Task.Run(() =>
        {
            ReadLive(l, generation, "a lease while the channel closes");
            l.Dispose(generation);
            Specification.Assert(!l.IsLive(generation), "a disposed lease is still live");
        });
        Task close = Task.Run(() => CloseAndDrop(ledger));
        Task[] both = [dispose, close];
        await Task.WhenAll(both);

        AssertAllGoneOnce(ledger, reference, unmap);
    }

    /// <summary>
    /// One delivery ends (its lease disposed, then disposed again and read through a kept view) while the same id's
    /// next delivery leases the mapping, maybe getting the very pooled lease back: the old view is stale and its second
    /// disposal does nothing, the new delivery's frame stays live and reads right until its own disposal.
    /// </summary>
    public static async Task LeaseVersusRedeliveryAsync()
    {
        var (ledger, reference, unmap) = Registered();
        FrameLease first = ledger.LeaseRegistered(Id, Size)!;
        long firstGeneration = first.Generation;
        Task ending = Task.Run(() =>
        {
            ReadLive(first, firstGeneration, "the first delivery");
            first.Dispose(firstGeneration);
            first.Dispose(firstGeneration); // again: must not end a later use of the same pooled lease
            Specification.Assert(ReadsStale(first, firstGeneration), "a view kept past its delivery's Dispose still reads");
        });
        Task next = Task.Run(() =>
        {
            FrameLease second = ledger.LeaseRegistered(Id, Size)!;
            long generation = second.Generation;
            Specification.Assert(!ReferenceEquals(second, first) || !first.IsLive(firstGeneration), "one pooled lease serves two live deliveries");
            ReadLive(second, generation, "the next delivery");
            ReadLive(second, generation, "the next delivery, again"); // the first one's second Dispose ran meanwhile, maybe
            second.Dispose(generation);
        });
        Task[] both = [ending, next];
        await Task.WhenAll(both);

        Specification.Assert(unmap.Disposals == 0, "the mapping went while registered");
        ledger.OnPeerForget(Id, out FrameMapping? mapping).Dispose();
        mapping!.Retire();
        AssertAllGoneOnce(ledger, reference, unmap);
    }

    /// <summary>
    /// One delivery's lease disposed on two threads at once while a third takes the id's next delivery, which may get
    /// the same pooled lease back: only one disposal ends the use, and the next delivery's frame stays live until its
    /// own disposal, whichever disposal comes last.
    /// </summary>
    public static async Task TwoDisposalsVersusRedeliveryAsync()
    {
        var (ledger, reference, unmap) = Registered();
        FrameLease first = ledger.LeaseRegistered(Id, Size)!;
        long firstGeneration = first.Generation;
        Task[] all =
        [
            Task.Run(() => first.Dispose(firstGeneration)),
            Task.Run(() => first.Dispose(firstGeneration)),
            Task.Run(() =>
            {
                FrameLease next = ledger.LeaseRegistered(Id, Size)!;
                long generation = next.Generation;
                ReadLive(next, generation, "the next delivery");
                ReadLive(next, generation, "the next delivery, again");
                next.Dispose(generation);
            }),
        ];
        await Task.WhenAll(all);

        Specification.Assert(unmap.Disposals == 0, "the mapping went while registered");
        ledger.OnPeerForget(Id, out FrameMapping? mapping).Dispose();
        mapping!.Retire();
        AssertAllGoneOnce(ledger, reference, unmap);
    }

    /// <summary>
    /// The channel closes while a delivery leases the mapping: the lease is refused (closed first) or reads the frame
    /// until its disposal, never the poison; the mapping goes exactly once.
    /// </summary>
    public static async Task CloseVersusLeaseAsync()
    {
        var (ledger, reference, unmap) = Registered();
        Task lease = Task.Run(() =>
        {
            try
            {
                FrameLease l = ledger.LeaseRegistered(Id, Size)!;
                ReadLive(l, l.Generation, "a lease racing close");
                l.Dispose(l.Generation);
            }
            catch (ChannelProtocolException e)
            {
                Specification.Assert(e.Reason == ChannelErrorReason.UnknownBufferId && ledger.IsClosed, $"a lease refused with {e.Reason}");
            }
        });
        Task close = Task.Run(() => CloseAndDrop(ledger));
        Task[] both = [lease, close];
        await Task.WhenAll(both);

        AssertAllGoneOnce(ledger, reference, unmap);
    }

    private static (ChannelLedger<LedgerRace.Ref> Ledger, LedgerRace.Ref Reference, Mapped Unmap) Registered()
    {
        var ledger = new ChannelLedger<LedgerRace.Ref>(4, 1 << 20);
        var reference = new LedgerRace.Ref();
        var unmap = new Mapped();
        Specification.Assert(ledger.Register(Id, Size, reference, new FrameMapping(unmap.Address, Size, unmap)), "registration refused");
        return (ledger, reference, unmap);
    }

    private static void CloseAndDrop(ChannelLedger<LedgerRace.Ref> ledger)
    {
        ChannelLedger<LedgerRace.Ref>.CloseResult closed = ledger.Close(ChannelErrorReason.None)!;
        closed.Mappings.ForEach(m => m.Retire());
        closed.Drop.ForEach(r => r.Dispose());
    }

    /// <summary>Reads the whole frame through a live lease: every byte is the pattern, none the poison.</summary>
    private static void ReadLive(FrameLease lease, long generation, string what)
    {
        Span<byte> bytes;
        try
        {
            bytes = new ReceivedFrame(lease, generation).Span;
        }
        catch (ObjectDisposedException)
        {
            Specification.Assert(false, $"{what}: its frame was refused before its own Dispose");
            return;
        }

        foreach (byte b in bytes)
        {
            Specification.Assert(b == Pattern, $"{what}: read {b:x2} instead of {Pattern:x2} ({(b == Poison ? "unmapped memory" : "another frame")})");
        }
    }

    private static bool ReadsStale(FrameLease lease, long generation)
    {
        try
        {
            _ = new ReceivedFrame(lease, generation).Span[0];
            return false;
        }
        catch (ObjectDisposedException)
        {
            return true;
        }
    }

    private static void AssertAllGoneOnce(ChannelLedger<LedgerRace.Ref> ledger, LedgerRace.Ref reference, Mapped unmap)
    {
        Specification.Assert(reference.Disposals == 1, $"the registration's reference was disposed {reference.Disposals} times");
        Specification.Assert(unmap.Disposals == 1, $"the mapping was unmapped {unmap.Disposals} times");
        Specification.Assert(ledger.RegisteredCount == 0 && ledger.ResidentBytes == 0, "the ledger still holds the registration");
    }

    /// <summary>The memory behind the mapping (a pinned array) and its unmap, which counts and poisons it.</summary>
    private sealed class Mapped : IDisposable
    {
        private readonly byte[] _bytes = GC.AllocateArray<byte>(Size, pinned: true);
        private int _disposals;

        public Mapped() => _bytes.AsSpan().Fill(Pattern);

        public nint Address => Marshal.UnsafeAddrOfPinnedArrayElement(_bytes, 0);

        public int Disposals => Volatile.Read(ref _disposals);

        public void Dispose()
        {
            Interlocked.Increment(ref _disposals);
            _bytes.AsSpan().Fill(Poison);
        }
    }
}

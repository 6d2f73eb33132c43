using System.Runtime.InteropServices;

namespace DmaBuf.Linux.Tests;

/// <summary>
/// The ring's wake-ups against a peer that owns the descriptor we signal and shares its open file description: it can
/// clear <c>O_NONBLOCK</c> on it and stop reading, so that a signal which respects the description's flag would wait
/// for the peer forever. (With eventfds, ring version 2, it did: the peer filled its counter and said it slept, and our
/// next publication blocked in <c>write</c>.) Our signals and drains take <c>MSG_DONTWAIT</c>, and the end we wait on
/// never leaves this process.
/// </summary>
public sealed unsafe partial class RingWakeTests
{
    private const long Size = 16 * 1024;

    [Fact]
    public void PeerThatMakesItsWakeUpBlockingAndFull_AndSaysItSleeps_CannotHoldUpOurSend()
    {
        using var peer = new WakePeer();
        using DmaBufHandle buffer = new MemfdExporter(new MmapCache()).Allocate(Size);
        peer.MakeWakeUpBlockingAndFull();
        peer.SayItSleeps();

        var send = Background<Exception?>.Start(() => Record.Exception(() => peer.Channel.SendBuffer(buffer)));
        bool returned = send.Wait(TimeSpan.FromSeconds(5)); // the send timeout is 300 ms
        peer.Unblock(); // lets a stuck send go, so the test ends either way
        Assert.True(send.Wait(Background<int>.Guard));
        Assert.True(returned, "SendBuffer was still in the peer's wake-up 5 s after it began.");
        Assert.Null(send.Result); // sent: a full queue already means "wake up"
        Assert.Equal(1, peer.Channel.WakeUpsSent);
    }

    [Fact]
    public void PeerThatMakesItsWakeUpBlockingAndFull_AndWaitsForRoom_CannotHoldUpOurReceive()
    {
        using var peer = new WakePeer();
        peer.MakeWakeUpBlockingAndFull();
        peer.SayItWaitsForRoom(7);
        peer.Publish(new RingEntry { Type = (uint)MessageType.Goodbye }); // taking it makes room: we signal the peer

        var receive = Background<Exception?>.Start(() => Record.Exception(() => peer.Channel.Receive(TimeSpan.FromSeconds(1))));
        bool returned = receive.Wait(TimeSpan.FromSeconds(5));
        peer.Unblock();
        Assert.True(receive.Wait(Background<int>.Guard));
        Assert.True(returned, "Receive(1 s) was still in the peer's wake-up after 5 s.");
        Assert.True(receive.Result is null or TimeoutException, $"{receive.Result}"); // the goodbye taken, then its own timeout
        Assert.Equal(1, peer.Channel.WakeUpsSent);
    }

    [Fact]
    public void TheEndWeWaitOn_NeverLeavesThisProcess()
    {
        using var peer = new WakePeer();
        using DmaBufHandle buffer = new MemfdExporter(new MmapCache()).Allocate(Size);
        peer.SayItSleeps();
        Assert.True(peer.Channel.SendBuffer(buffer) > 0);
        Assert.True(peer.TakeWakeUp(), "the peer said it slept and was not signalled on the end it kept");

        // What the channel sent at connect is the signal end of its pair: a datagram on it reaches the channel's
        // waiting end, and the channel's descriptor for that end is not the one it sent.
        Assert.True(Interop.Libc.IsUnixDatagramSocket(peer.ChannelsSignal));
        Assert.NotEqual(FileIdentity(peer.ChannelsSignal), FileIdentity(peer.Channel.Ring!.Wake));
    }

    internal static SafeFdHandle ReopenReadOnly(SafeFdHandle fd)
    {
        int n = open($"/proc/self/fd/{fd.Number}", 0x80000 /* O_RDONLY | O_CLOEXEC */);
        Assert.True(n >= 0, $"open: errno {Marshal.GetLastPInvokeError()}");
        return new SafeFdHandle(n);
    }

    private static (ulong Device, ulong Inode) FileIdentity(SafeFdHandle fd)
    {
        Interop.Libc.FileStatus info = Interop.Libc.FStat(fd);
        return (info.Device, info.Inode);
    }

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "send", SetLastError = true)]
    private static partial nint send(int fd, void* buffer, nuint length, int flags);

    [LibraryImport("libc", EntryPoint = "recv", SetLastError = true)]
    private static partial nint recv(int fd, void* buffer, nuint length, int flags);

    /// <summary>
    /// A ring peer by hand (as <see cref="RawRingPeer"/>) that keeps its wake-up pair: the end it waits on, and a copy of
    /// the signal end it sent, whose open file description the channel now shares.
    /// </summary>
    private sealed class WakePeer : IDisposable
    {
        private readonly ChannelSocket _socket;
        private readonly SafeFdHandle _wait;
        private readonly SafeFdHandle _signal;
        private readonly nint _region; // the peer's region (the channel's inbound)
        private readonly nint _ours;   // the channel's region (its outbound)
        private long _head;

        public WakePeer()
        {
            (SafeFdHandle ours, SafeFdHandle theirs) = Interop.Libc.SocketPair(Interop.Libc.SOCK_SEQPACKET);
            _socket = new ChannelSocket(theirs);
            (SafeFdHandle region, _wait, _signal) = ChannelRing.CreateOurs();
            using (region)
            {
                _region = Interop.Libc.MapShared(region, ChannelRing.RegionSize, populate: true);
                Assert.Equal(SendStatus.Sent, _socket.Send(RawPeer.Encode(RawRingPeer.Setup), region, _signal, Deadline.Never));
            }

            Channel = BufferChannel.FromSocket(ours, new BufferChannelOptions
            {
                ImportCache = new ImportCache(new MmapCache()), Transport = ChannelTransport.Ring, Wait = RingWait.Block,
                SendTimeout = TimeSpan.FromMilliseconds(300),
            });
            Span<byte> data = stackalloc byte[ChannelSocket.MaxRecord];
            Assert.Equal(ReceiveStatus.Record, _socket.Receive(data, Deadline.Never, out ReceivedRecord? record, out _));
            using (record)
            {
                using SafeFdHandle theirRegion = record!.TakeDescriptor();
                ChannelsSignal = record.TakeDescriptor();
                _ours = Interop.Libc.MapShared(theirRegion, ChannelRing.RegionSize, populate: false);
            }
        }

        public BufferChannel Channel { get; }

        /// <summary>The descriptor the channel sent at connect for us to signal it.</summary>
        public SafeFdHandle ChannelsSignal { get; }

        /// <summary>Clears O_NONBLOCK on the description the channel signals through, and fills the queue behind it.</summary>
        public void MakeWakeUpBlockingAndFull()
        {
            int flags = Interop.Libc.fcntl(_signal, Interop.Libc.F_GETFL, 0);
            Assert.True(flags >= 0);
            Assert.Equal(0, Interop.Libc.fcntl(_signal, 4 /* F_SETFL */, flags & ~Interop.Libc.O_NONBLOCK));
            byte one = 1;
            int queued = 0;
            while (send(_signal.Number, &one, 1, Interop.Libc.MSG_DONTWAIT) == 1)
            {
                queued++;
            }

            Assert.Equal(Interop.Libc.EAGAIN, Marshal.GetLastPInvokeError());
            Assert.True(queued > 0);
        }

        /// <summary>Reads what is queued on the end we wait on, so a signal that waits for room can finish.</summary>
        public void Unblock()
        {
            byte b;
            while (recv(_wait.Number, &b, 1, Interop.Libc.MSG_DONTWAIT) >= 0)
            {
            }
        }

        /// <summary>Whether a wake-up is queued on the end we wait on (taking one).</summary>
        public bool TakeWakeUp()
        {
            byte b;
            return recv(_wait.Number, &b, 1, Interop.Libc.MSG_DONTWAIT) == 1;
        }

        /// <summary>The channel's producer reads this flag (in its own region) to decide whether to signal us.</summary>
        public void SayItSleeps() => Volatile.Write(ref *(int*)(_ours + ChannelRing.SleepingOffset), 1);

        /// <summary>Our room-wait word, in our region: the channel's consumer signals us once per new number.</summary>
        public void SayItWaitsForRoom(int number) => Volatile.Write(ref *(int*)(_region + ChannelRing.RoomWaitOffset), number);

        public void Publish(RingEntry entry)
        {
            RingEntry* slot = ChannelRing.Slot(_region, _head);
            ChannelRing.WriteFields(slot, entry);
            _head++;
            Volatile.Write(ref slot->Stamp, _head);
        }

        public void Dispose()
        {
            Unblock();
            _socket.Dispose();
            Channel.Dispose();
            ChannelsSignal.Dispose();
            _wait.Dispose();
            _signal.Dispose();
            Interop.Libc.Unmap(_region, ChannelRing.RegionSize);
            Interop.Libc.Unmap(_ours, ChannelRing.RegionSize);
        }
    }
}

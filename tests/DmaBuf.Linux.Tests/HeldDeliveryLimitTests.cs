namespace DmaBuf.Linux.Tests;

/// <summary>
/// What a peer can make one connection hold: every transient delivery holds a descriptor until it is disposed, however
/// few bytes it claims, so their number is bounded as registrations are (<see cref="BufferChannelOptions.MaxRegisteredBuffers"/>);
/// and a ping's wait holds what arrives before its pong only up to a bound. (An outside review found both unbounded:
/// 3,000 one-byte memfds sent while a ping waited were all held, on the way to the process's descriptor limit.)
/// </summary>
public sealed class HeldDeliveryLimitTests
{
    [Fact]
    public void TransientDeliveriesHeldAtOnce_AreBoundedByCount_NotOnlyByBytes()
    {
        var imports = new ImportCache(new MmapCache());
        Leaks.AssertNone(() =>
        {
            using var peer = new RawPeer(new BufferChannelOptions { ImportCache = imports, MaxRegisteredBuffers = 4 });
            var held = new List<ChannelMessage>();
            for (long seq = 1; seq <= 4; seq++)
            {
                SendTinyTransient(peer, seq);
                held.Add(Background<ChannelMessage?>.Run(() => peer.Channel.Receive(TimeSpan.FromSeconds(5)))!);
            }

            ((IDisposable)held[0]).Dispose(); // one disposed: room for one more
            SendTinyTransient(peer, 5);
            held.Add(Background<ChannelMessage?>.Run(() => peer.Channel.Receive(TimeSpan.FromSeconds(5)))!);

            SendTinyTransient(peer, 6); // a fifth held at once
            var e = Assert.Throws<ChannelProtocolException>(() => Background<ChannelMessage?>.Run(() => peer.Channel.Receive(TimeSpan.FromSeconds(5))));
            Assert.Equal(ChannelErrorReason.TooManyBuffers, e.Reason);
            Assert.Equal(ChannelErrorReason.TooManyBuffers, peer.Channel.CloseReason);
            foreach (ChannelMessage m in held)
            {
                ((IDisposable)m).Dispose();
            }
        });
    }

    [Fact]
    public void PeerThatAnswersAPingWithTinyTransientBuffers_CannotMakeTheConnectionHoldMoreThanTheBound()
    {
        var imports = new ImportCache(new MmapCache());
        using var peer = new RawPeer(new BufferChannelOptions { ImportCache = imports, SendTimeout = TimeSpan.FromSeconds(2) });
        var ping = Background<Exception?>.Start(() => Record.Exception(() => peer.Channel.Ping(TimeSpan.FromSeconds(20))));
        int sent = 0;
        try
        {
            for (long seq = 1; seq <= 3000; seq++)
            {
                SendTinyTransient(peer, seq);
                sent++;
            }
        }
        catch (LinuxErrorException)
        {
            // the channel closed the connection under the flood: the answer this test wants
        }

        Exception? e = ping.Result;
        ChannelProtocolException refused = Assert.IsType<ChannelProtocolException>(e);
        Assert.Equal(ChannelErrorReason.TooManyBuffers, refused.Reason);
        Assert.True(sent > BufferChannelOptions.DefaultMaxRegisteredBuffers, $"only {sent} sent");
        Assert.Equal(0, HeldTinyMemfds());
    }

    private static void SendTinyTransient(RawPeer peer, long seq)
    {
        using SafeFdHandle memfd = Interop.Libc.CreateMemfd("held-limit-tiny", 1);
        Interop.Libc.AddSeals(memfd, MemfdExporter.Seals);
        peer.Send(RawPeer.Encode(new WireMessage(MessageType.Buffer, MessageFlags.FdAttached | MessageFlags.Transient, seq, seq, 1)), memfd);
    }

    private static int HeldTinyMemfds()
    {
        int n = 0;
        foreach (string fd in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
        {
            try
            {
                if (new FileInfo(fd).LinkTarget?.StartsWith("/memfd:held-limit-tiny", StringComparison.Ordinal) == true)
                {
                    n++;
                }
            }
            catch (IOException)
            {
                // closed meanwhile
            }
        }

        return n;
    }
}

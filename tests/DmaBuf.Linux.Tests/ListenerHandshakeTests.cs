namespace DmaBuf.Linux.Tests;

/// <summary>
/// A ring-transport listener's handshakes: a peer that connects and never sends its half of the ring's setup must not
/// hold up the connections behind it. (Before, <see cref="BufferChannelListener.Accept"/> waited inside itself, up to
/// the send timeout, for each peer's setup in turn: an outside review's two silent peers made an honest client's own
/// setup time out.)
/// </summary>
public sealed unsafe class ListenerHandshakeTests
{
    private static readonly TimeSpan s_timeout = TimeSpan.FromSeconds(1);

    [Fact]
    public void PeersThatConnectAndSayNothing_DoNotHoldUpAnHonestRingClient()
    {
        string name = ProcessResources.UniqueSocketName("silent");
        var options = new BufferChannelOptions { Transport = ChannelTransport.Ring, SendTimeout = s_timeout };
        using BufferChannelListener listener = BufferChannelListener.Listen(name, options);
        using SafeFdHandle silent1 = ConnectRaw(name);
        using SafeFdHandle silent2 = ConnectRaw(name);

        var honest = Background<Exception?>.Start(() => Record.Exception(() => BufferChannel.Connect(name, options).Dispose()));

        // The server's loop, as an application writes it: accept, and go on past connections that fail their handshake.
        var server = Background<List<string>>.Start(() =>
        {
            var outcomes = new List<string>();
            for (int i = 0; i < 3; i++)
            {
                try
                {
                    using BufferChannel c = listener.Accept(TimeSpan.FromSeconds(10));
                    outcomes.Add("accepted");
                }
                catch (ChannelProtocolException e)
                {
                    outcomes.Add(e.Reason.ToString());
                }
            }

            return outcomes;
        });

        Exception? failure = honest.Result;
        List<string> outcomes = server.Result;
        Assert.True(failure is null, $"The honest client failed: {failure?.Message} (server: {string.Join("; ", outcomes)})");
        Assert.Equal("accepted", outcomes[0]); // the honest one first: the silent ones ahead of it wait beside it
        Assert.Equal(["RingCorrupt", "RingCorrupt"], outcomes[1..]); // each silent one, at its send timeout
    }

    [Fact]
    public void AcceptWithOnlyASilentPeer_TimesOut_AndDisposingTheListenerClosesItsHandshake()
    {
        Leaks.AssertNone(() =>
        {
            string name = ProcessResources.UniqueSocketName("silent-one");
            var options = new BufferChannelOptions { Transport = ChannelTransport.Ring, SendTimeout = TimeSpan.FromSeconds(30) };
            using SafeFdHandle silent = Connect(name, options, out BufferChannelListener listener);
            using (listener)
            {
                Assert.Throws<TimeoutException>(() => Background<int>.Run(() =>
                {
                    listener.Accept(TimeSpan.FromMilliseconds(200)).Dispose();
                    return 0;
                }));
            }

            // The listener's Dispose closed the channel that waited for the silent peer: no descriptor of it is left
            // (the region, the wake-up socket, the connection), which Leaks.AssertNone checks.
        });
    }

    private static SafeFdHandle Connect(string name, BufferChannelOptions options, out BufferChannelListener listener)
    {
        listener = BufferChannelListener.Listen(name, options);
        return ConnectRaw(name);
    }

    private static SafeFdHandle ConnectRaw(string name)
    {
        uint length = Interop.Libc.AbstractAddress(name, out Interop.Libc.sockaddr_un address);
        SafeFdHandle socket = Interop.Libc.UnixSocket(Interop.Libc.SOCK_SEQPACKET);
        Assert.Equal(0, Interop.Libc.connect(socket, &address, length));
        return socket;
    }
}

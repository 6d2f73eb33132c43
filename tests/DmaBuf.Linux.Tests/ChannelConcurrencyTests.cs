namespace DmaBuf.Linux.Tests;

/// <summary>
/// Real threads racing on one channel: two sends of one new buffer, a send against Dispose, a receive against Dispose.
/// (The ledger's own races are explored systematically by ChannelLedgerModelTests.)
/// </summary>
public sealed class ChannelConcurrencyTests
{
    private const long Size = 4096;

    private static readonly TimeSpan s_guard = Background<int>.Guard;

    [Fact]
    public void TwoThreadsSendingOneNewBuffer_ThePeerNeverSeesAnIdBeforeItsDescriptor()
    {
        var exporter = new MemfdExporter(new MmapCache());
        var imports = new ImportCache(new MmapCache());
        (BufferChannel sender, BufferChannel receiver) = BufferChannel.CreatePair(second: new BufferChannelOptions { ImportCache = imports });
        using (sender)
        using (receiver)
        {
            for (int round = 0; round < 300; round++)
            {
                using DmaBufHandle buffer = exporter.Allocate(Size);
                using var start = new Barrier(2);
                Background<long>[] sends = [.. Enumerable.Range(0, 2).Select(_ => Background<long>.Start(() =>
                {
                    start.SignalAndWait();
                    return sender.SendBuffer(buffer);
                }))];
                Assert.True(sends.All(s => s.Wait(s_guard)));
                Assert.False(receiver.IsClosed, $"round {round}: the receiver closed: {receiver.CloseReason}");
                long[] sequences = [.. sends.Select(s => s.Result).Order()];

                // An id-only send that overtook its descriptor would close the receiver with UnknownBufferId here.
                using var first = (ReceivedBuffer)receiver.Receive(s_guard)!;
                using var second = (ReceivedBuffer)receiver.Receive(s_guard)!;
                Assert.True(first.CarriedFd, $"round {round}: the first delivery of a new buffer came without its descriptor");
                Assert.False(second.CarriedFd);
                Assert.True(first.Sequence < second.Sequence, "deliveries arrive in sequence order");
                Assert.Equal(sequences, new[] { first.Sequence, second.Sequence });
                first.Dispose();
                second.Dispose();
                Assert.IsType<BufferReleased>(sender.Receive(s_guard)); // read the releases, or the receiver's sends would
                Assert.IsType<BufferReleased>(sender.Receive(s_guard)); // fill up and (rightly) time out
                Assert.True(sender.Forget(buffer.BufferId));
            }
        }
    }

    [Fact]
    public void DisposeWhileASendIsStuckOnAPeerThatNeverReads_ReturnsAtOnce_AndTheSendEnds()
    {
        var exporter = new MemfdExporter(new MmapCache());
        using DmaBufHandle buffer = exporter.Allocate(Size);
        (SafeFdHandle ours, SafeFdHandle theirs) = Interop.Libc.SocketPair(Interop.Libc.SOCK_SEQPACKET);
        using (theirs) // never read
        using (SafeFdHandle probe = Interop.Libc.Duplicate(ours)) // the same socket, to see when it is full
        {
            // The peer never reads: fill the socket to the brim first, so the channel's first send is stuck for sure.
            Fill(probe);

            // A send deadline far beyond the guard: only Dispose can end the stuck send in time.
            BufferChannel channel = BufferChannel.FromSocket(ours, new BufferChannelOptions { SendTimeout = TimeSpan.FromMinutes(10) });
            using var tried = new ManualResetEventSlim();
            Background<Exception> sending;
            using (Interop.Faults.Inject(call =>
            {
                if (call == "sendmsg")
                {
                    tried.Set(); // the send has reached the socket (and will find it full)
                }

                return 0;
            }))
            {
                sending = Background<Exception>.Start(() =>
                {
                    try
                    {
                        channel.SendBuffer(buffer);
                        return new InvalidOperationException("a send to a full socket went out");
                    }
                    catch (Exception e)
                    {
                        return e;
                    }
                });
                Assert.True(tried.Wait(s_guard, TestContext.Current.CancellationToken));
            }

            Assert.False(sending.IsCompleted, "the send into a full socket returned");
            var disposing = Background<int>.Start(() =>
            {
                channel.Dispose();
                return 0;
            });
            Assert.True(disposing.Wait(s_guard), "Dispose waited for the stuck send");
            Assert.True(sending.Wait(s_guard), "the stuck send did not end after Dispose");
            Assert.IsType<ChannelProtocolException>(sending.Result);
            Assert.True(channel.IsClosed);
            Assert.Equal(0, channel.SharedBuffers);
            Assert.Equal(1, buffer.Buffer.ReferenceCount); // the channel's registration is gone
        }
    }

    /// <summary>Sends 16-byte records on <paramref name="socket"/> until the kernel says it is full.</summary>
    private static unsafe void Fill(SafeFdHandle socket)
    {
        byte* data = stackalloc byte[16];
        var iov = new Interop.Libc.iovec { iov_base = data, iov_len = 16 };
        var msg = new Interop.Libc.msghdr { msg_iov = &iov, msg_iovlen = 1 };
        while (Interop.Libc.sendmsg(socket, &msg, Interop.Libc.MSG_DONTWAIT | Interop.Libc.MSG_NOSIGNAL) >= 0)
        {
        }

        Assert.Equal(Interop.Libc.EAGAIN, Interop.LastErrno);
    }

    [Fact]
    public void ReceiveRacingDispose_EndsCleanly_EveryTime()
    {
        for (int round = 0; round < 200; round++)
        {
            (BufferChannel a, BufferChannel b) = BufferChannel.CreatePair();
            using (b)
            {
                var receiving = Background<ChannelMessage?>.Start(() => a.Receive(s_guard));
                if (round % 2 == 0)
                {
                    Thread.Yield();
                }

                a.Dispose();
                Assert.True(receiving.Wait(s_guard), $"round {round}: Receive did not return after Dispose");
                Assert.Null(receiving.Result);
                Assert.Null(b.Receive(s_guard)); // a said goodbye (or, when it could not, b sees the end)
                Assert.True(b.IsClosed);
            }
        }
    }

    [Fact]
    public void SendsRacingDispose_EitherGoOutOrFailAsClosed_AndLeaveNothingBehind()
    {
        var exporter = new MemfdExporter(new MmapCache());
        var imports = new ImportCache(new MmapCache());
        for (int round = 0; round < 100; round++)
        {
            using DmaBufHandle buffer = exporter.Allocate(Size);
            (BufferChannel sender, BufferChannel receiver) = BufferChannel.CreatePair(second: new BufferChannelOptions { ImportCache = imports });
            using (receiver)
            {
                var sending = Background<int>.Start(() =>
                {
                    try
                    {
                        for (int i = 0; i < 20; i++)
                        {
                            sender.SendBuffer(buffer);
                        }
                    }
                    catch (Exception e) when (e is ChannelProtocolException or ObjectDisposedException)
                    {
                        // closed under us: the expected end of the race
                    }

                    return 0;
                });
                sender.Dispose();
                Assert.True(sending.Wait(s_guard));
                Assert.Equal(0, sender.SharedBuffers);
                Assert.Equal(0, sender.OutstandingDeliveries);
                Assert.Equal(1, buffer.Buffer.ReferenceCount);

                var received = new List<ReceivedBuffer>();
                try
                {
                    while (receiver.Receive(s_guard) is ReceivedBuffer r)
                    {
                        received.Add(r);
                    }
                }
                catch (ChannelProtocolException e)
                {
                    Assert.Equal(ChannelErrorReason.PeerClosed, e.Reason); // no goodbye when a send held the socket
                }

                Assert.All(received, r => Assert.Equal(received[0].Handle.Buffer, r.Handle.Buffer));
                received.ForEach(r => r.Dispose());
                Assert.Equal(0, imports.Count);
            }
        }
    }
}

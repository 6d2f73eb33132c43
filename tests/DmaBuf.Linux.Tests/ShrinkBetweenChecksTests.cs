namespace DmaBuf.Linux.Tests;

/// <summary>
/// A peer that changes a memfd between our checks: it sends an unsealed memfd, then shrinks and seals it while we
/// validate. A size read before the seals would let a short buffer through, and touching its end would kill us with
/// SIGBUS. Deterministic with the errno seam (the peer acts exactly between two of our reads), then racy on threads.
/// </summary>
public sealed class ShrinkBetweenChecksTests
{
    private const long Size = 64 * 1024;

    [Fact]
    public void PeerShrinksAndSealsJustBeforeTheSealsAreRead_IsRefused()
    {
        var imports = new ImportCache(new MmapCache());
        Leaks.AssertNone(() =>
        {
            SafeFdHandle memfd = Interop.Libc.CreateMemfd("shrinking", Size);
            using SafeFdHandle peersCopy = Interop.Libc.Duplicate(memfd);
            BufferImportException e;
            using (Interop.Faults.Inject(call =>
            {
                if (call == "fcntl(F_GET_SEALS)" && !peersCopy.IsClosed)
                {
                    // The peer, between our first look and our reading the seals.
                    Interop.Check(Interop.Libc.ftruncate(peersCopy, Size / 4), "ftruncate");
                    Interop.Libc.AddSeals(peersCopy, MemfdExporter.Seals);
                }

                return 0;
            }))
            {
                e = Assert.Throws<BufferImportException>(() => imports.Import(memfd, Size));
            }

            Assert.Equal(ChannelErrorReason.BufferTooSmall, e.Reason);
            Assert.True(memfd.IsClosed);
            Assert.Equal(0, imports.Count);
        });
    }

    [Fact]
    public void PeerShrinksAndSealsWhileWeValidate_NeverGetsAShortBufferAccepted()
    {
        var imports = new ImportCache(new MmapCache());
        int accepted = 0, refused = 0;
        for (int round = 0; round < 300; round++)
        {
            SafeFdHandle memfd = Interop.Libc.CreateMemfd("racing", Size);
            using SafeFdHandle peersCopy = Interop.Libc.Duplicate(memfd);
            using var start = new Barrier(2);
            var peer = new Thread(() =>
            {
                start.SignalAndWait();
                for (int spin = round % 50; spin > 0; spin--)
                {
                    Thread.SpinWait(20);
                }

                _ = Interop.Libc.ftruncate(peersCopy, Size / 4);
                Interop.Libc.AddSeals(peersCopy, MemfdExporter.Seals);
            });
            peer.Start();
            start.SignalAndWait(TestContext.Current.CancellationToken);
            try
            {
                using DmaBufHandle imported = imports.Import(memfd, Size);
                peer.Join();
                // Accepted: it must have been sealed at full size before the peer shrank it (the shrink then failed).
                Assert.True(Interop.Libc.FStat(peersCopy).Size >= Size, $"round {round}: a buffer shorter than claimed was accepted");
                using CpuMapping map = imported.MapCpu();
                _ = map.Span[(int)Size - 1]; // the last byte: SIGBUS if the file were short
                accepted++;
            }
            catch (BufferImportException e) when (e.Reason is ChannelErrorReason.NotSealed or ChannelErrorReason.BufferTooSmall)
            {
                peer.Join();
                refused++;
            }
        }

        Assert.Equal(300, accepted + refused);
        Assert.Equal(0, imports.Count);
    }
}

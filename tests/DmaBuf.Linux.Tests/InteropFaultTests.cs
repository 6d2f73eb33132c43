namespace DmaBuf.Linux.Tests;

/// <summary>
/// The kernel says no: every call of the errno seam (memfd_create, mmap, sendmsg, recvmsg, dup, ioctl, fstat, the seal
/// read) is made to fail in turn, with each errno the kernel gives for a lack of resources or an interruption, during a
/// whole exchange. Nothing may leak (descriptors and mappings are counted), a buffer is released exactly once, and a
/// failure surfaces as a typed error, never as a hang, a crash or a half-made object.
/// </summary>
public sealed class InteropFaultTests
{
    private const long Size = 16 * 1024;

    public static TheoryData<int> Errnos => [Interop.Libc.EMFILE, Interop.Libc.ENOMEM, Interop.Libc.EINTR, Interop.Libc.EAGAIN];

    [Theory]
    [MemberData(nameof(Errnos))]
    public void EveryCallOfAnExchange_FailingInTurn_LeaksNothing(int errno)
    {
        var registry = new BufferRegistry();
        Exchange(registry, failAt: 0, errno); // warm-up, and the count of seam calls an exchange makes
        ProcessSnapshot before = ProcessSnapshot.Take();
        int calls = Exchange(registry, failAt: 0, errno).Calls;
        Assert.True(calls > 10, $"only {calls} seam calls in an exchange");

        var outcomes = new List<string>();
        for (int k = 1; k <= calls; k++)
        {
            (int _, string outcome) = Exchange(registry, failAt: k, errno);
            outcomes.Add(outcome);
            before.AssertNothingHeldSince($"{Interop.Libc.ErrnoName(errno)} at seam call {k} ({outcome})");
            Assert.Equal(0, registry.Count);
        }

        if (errno is Interop.Libc.EINTR or Interop.Libc.EAGAIN)
        {
            // Interruptions and "try again" on the socket are retried, not failures.
            Assert.Contains(outcomes, o => o.StartsWith("ok", StringComparison.Ordinal) && o.Contains("recvmsg", StringComparison.Ordinal));
            Assert.Contains(outcomes, o => o.StartsWith("ok", StringComparison.Ordinal) && o.Contains("sendmsg", StringComparison.Ordinal));
        }
        else
        {
            Assert.Contains(outcomes, o => o.StartsWith("failed", StringComparison.Ordinal));
        }
    }

    [Fact]
    public void MemfdCreate_Emfile_ThrowsTheErrno_AndLeavesNoBuffer()
    {
        var registry = new BufferRegistry();
        var exporter = new MemfdExporter(new MmapCache(), registry);
        LinuxErrorException e;
        using (Interop.Faults.Inject(call => call == "memfd_create" ? Interop.Libc.EMFILE : 0))
        {
            e = Assert.Throws<LinuxErrorException>(() => exporter.Allocate(Size));
        }

        Assert.Equal((Interop.Libc.EMFILE, "memfd_create"), (e.Errno, e.Call));
        Assert.Equal(0, registry.Count);
    }

    [Fact]
    public void FstatFailingInsideExport_ClosesTheDescriptorOnce_AndRegistersNothing()
    {
        var registry = new BufferRegistry();
        var exporter = new MemfdExporter(new MmapCache(), registry);
        Leaks.AssertNone(() =>
        {
            using (Interop.Faults.Inject(call => call == "fstat" ? Interop.Libc.ENOMEM : 0))
            {
                Assert.Equal(Interop.Libc.ENOMEM, Assert.Throws<LinuxErrorException>(() => exporter.Allocate(Size)).Errno);
            }

            Assert.Equal(0, registry.Count);
        });
    }

    [Fact]
    public void MmapFailing_LeavesTheBufferUsable_AndTheNextMapWorks()
    {
        var exporter = new MemfdExporter(new MmapCache());
        Leaks.AssertNone(() =>
        {
            using DmaBufHandle buffer = exporter.Allocate(Size);
            using (Interop.Faults.Inject(call => call == "mmap" ? Interop.Libc.ENOMEM : 0))
            {
                Assert.Equal(Interop.Libc.ENOMEM, Assert.Throws<LinuxErrorException>(() => buffer.MapCpu()).Errno);
            }

            using CpuMapping map = buffer.MapCpu();
            map.Span[0] = 1;
            Assert.Equal(0, exporter.Cache.Statistics.LiveMappings - 1);
        });
    }

    /// <summary>
    /// One exchange (allocate, send, receive, map, acknowledge, release, forget, close) with the <paramref name="failAt"/>-th
    /// seam call failing with <paramref name="errno"/> (0: none). Returns how many seam calls it made and how it ended.
    /// </summary>
    private static (int Calls, string Outcome) Exchange(BufferRegistry registry, int failAt, int errno)
    {
        int calls = 0;
        string? failed = null;
        var exporter = new MemfdExporter(new MmapCache(), registry);
        var imports = new ImportCache(new MmapCache(), registry);
        DmaBuffer? sent = null;
        string outcome;
        using (Interop.Faults.Inject(call =>
        {
            if (++calls == failAt)
            {
                failed = call;
                return errno;
            }

            return 0;
        }))
        {
            try
            {
                (BufferChannel sender, BufferChannel receiver) = BufferChannel.CreatePair(
                    new BufferChannelOptions { SendTimeout = TimeSpan.FromSeconds(5) },
                    new BufferChannelOptions { ImportCache = imports, SendTimeout = TimeSpan.FromSeconds(5) });
                using (sender)
                using (receiver)
                using (DmaBufHandle buffer = exporter.Allocate(Size))
                {
                    sent = buffer.Buffer;
                    using (CpuMapping map = buffer.MapCpu())
                    {
                        map.Span[0] = 42;
                    }

                    sender.SendBuffer(buffer, userData: 7);
                    using (var received = (ReceivedBuffer)receiver.Receive(TimeSpan.FromSeconds(5))!)
                    {
                        using (CpuMapping map = received.Handle.MapCpu())
                        {
                            Assert.Equal(42, map.Span[0]);
                        }

                        receiver.Acknowledge(received, 1);
                        Assert.IsType<BufferAcknowledged>(sender.Receive(TimeSpan.FromSeconds(5)));
                    }

                    Assert.IsType<BufferReleased>(sender.Receive(TimeSpan.FromSeconds(5)));
                    Assert.True(sender.Forget(buffer.BufferId));
                    using (SafeFdHandle copy = Interop.Libc.Duplicate(buffer.Buffer.GetLinuxBuffer().Fd))
                    {
                        Assert.False(copy.IsInvalid);
                    }
                }

                outcome = "ok";
            }
            catch (Exception e) when (e is LinuxErrorException or ChannelProtocolException or BufferImportException or DmaMappingException)
            {
                outcome = $"failed: {e.GetType().Name}: {e.Message}";
            }
        }

        Assert.True(sent is null || sent.State == DmaBufState.Released, $"the sent buffer outlived the exchange ({failed})");
        Assert.Equal(0, imports.Count);
        return (calls, $"{outcome} [{failed ?? "no fault"}]");
    }
}

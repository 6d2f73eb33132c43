namespace DmaBuf.Linux.Tests;

public sealed class SafeFdHandleTests
{
    [Fact]
    public void Dispose_ClosesTheDescriptorOnce()
    {
        SafeFdHandle fd = Interop.Libc.CreateMemfd("close-once", 4096);
        int number = fd.Number;
        Assert.True(ProcessResources.IsOpen(number));

        fd.Dispose();
        fd.Dispose();

        Assert.False(ProcessResources.IsOpen(number));
        Assert.True(fd.IsClosed);
        Assert.Throws<ObjectDisposedException>(() => fd.Number);
    }

    [Fact]
    public void DisposedHandle_PassedToACall_ThrowsObjectDisposedInsteadOfUsingAReusedNumber()
    {
        SafeFdHandle fd = Interop.Libc.CreateMemfd("disposed", 4096);
        fd.Dispose();

        Assert.Throws<ObjectDisposedException>(() => FileIdentity.Of(fd));
    }

    [Fact]
    public void MinusOne_IsInvalid()
    {
        using var fd = new SafeFdHandle(-1);
        Assert.True(fd.IsInvalid);
    }

    [Fact]
    public void CreatedDescriptors_AreCloseOnExec()
    {
        using SafeFdHandle memfd = Interop.Libc.CreateMemfd("cloexec", 4096);
        (SafeFdHandle a, SafeFdHandle b) = Interop.Libc.SocketPair(Interop.Libc.SOCK_SEQPACKET);
        using (a)
        using (b)
        {
            foreach (SafeFdHandle fd in new[] { memfd, a, b })
            {
                Assert.Equal(Interop.Libc.FD_CLOEXEC, Interop.Libc.fcntl(fd, Interop.Libc.F_GETFD, 0) & Interop.Libc.FD_CLOEXEC);
            }
        }
    }

    [Fact]
    public void FailedCall_ThrowsLinuxErrorWithErrnoAndCall()
    {
        LinuxErrorException e = Assert.Throws<LinuxErrorException>(() => Interop.Libc.OpenReadWrite("/nonexistent/dmabuf-node"));

        Assert.Equal(Interop.Libc.ENOENT, e.Errno);
        Assert.Equal("ENOENT", e.ErrnoName);
        Assert.Equal("open", e.Call);
        Assert.Contains("/nonexistent/dmabuf-node", e.Message, StringComparison.Ordinal);
        Assert.IsAssignableFrom<IOException>(e);
    }

    [Fact]
    public void FailedCall_OnAMemfdSealedAgainstGrowth_ReportsEperm()
    {
        using SafeFdHandle fd = Interop.Libc.CreateMemfd("sealed", 4096);
        Interop.Libc.AddSeals(fd, MemfdExporter.Seals);

        LinuxErrorException e = Assert.Throws<LinuxErrorException>(() => Interop.Libc.AddSeals(fd, Interop.Libc.F_SEAL_WRITE));

        Assert.Equal(Interop.Libc.EPERM, e.Errno);
        Assert.Equal("fcntl(F_ADD_SEALS)", e.Call);
    }
}

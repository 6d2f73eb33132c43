using System.Runtime.InteropServices;
using DmaBuf.Testing;

namespace DmaBuf.Linux.Tests;

/// <summary>
/// The rules of <c>/dev/udmabuf</c> that the kernel's selftest (tools/testing/selftests/drivers/dma-buf/udmabuf.c)
/// checks, which our <see cref="UdmabufExporter"/> relies on: offset and size in whole pages, only the close-on-exec flag, a memfd
/// sealed against shrinking (anything else is refused), and a dma-buf that is the memfd's pages themselves, so later
/// writes to the memfd show through it. Skips where the kernel has no udmabuf (Debian 12's 6.1); runs in the
/// harness's 6.12 guest.
/// </summary>
[Trait(KernelRequirement.Trait, "udmabuf")]
public sealed class UdmabufSelftestTests
{
    private static readonly int s_page = Environment.SystemPageSize;

    [Fact]
    public void Create_OffsetNotPageAligned_IsEinval() =>
        AssertRefused(Interop.Libc.EINVAL, SealedMemfd(4), offset: s_page / 2, size: s_page);

    [Fact]
    public void Create_SizeNotAWholeNumberOfPages_IsEinval() =>
        AssertRefused(Interop.Libc.EINVAL, SealedMemfd(4), offset: 0, size: s_page + 1);

    // The kernel's selftest has no unknown-flags case, and the kernel does not refuse them: UDMABUF_CREATE reads only
    // UDMABUF_FLAGS_CLOEXEC (seen on 6.12). So the flags our exporter passes are the only ones that mean anything.
    [Theory]
    [InlineData(0x2u, false)]
    [InlineData(0x1u | 0x2u | 0x80u, true)]
    public void Create_UnknownFlagBits_AreIgnored_OnlyCloexecCounts(uint flags, bool closeOnExec)
    {
        using SafeFdHandle memfd = SealedMemfd(1);
        using SafeFdHandle device = Device();

        using SafeFdHandle dmaBuf = Create(device, memfd, offset: 0, size: s_page, flags);

        int fdFlags = Interop.Libc.fcntl(dmaBuf, Interop.Libc.F_GETFD, 0);
        Assert.True(fdFlags >= 0);
        Assert.Equal(closeOnExec, (fdFlags & Interop.Libc.FD_CLOEXEC) != 0);
    }

    [Fact]
    public void Create_FromADescriptorThatIsNotAMemfd_IsEbadfd()
    {
        (SafeFdHandle read, SafeFdHandle write) = Interop.Libc.Pipe();
        using (write)
        {
            AssertRefused(Interop.Libc.EBADFD, read, offset: 0, size: s_page);
        }
    }

    [Fact]
    public void Create_FromAMemfdNotSealedAgainstShrinking_IsEinval()
    {
        SafeFdHandle memfd = Interop.Libc.CreateMemfd("udmabuf-unsealed", 4L * s_page);
        Interop.Libc.AddSeals(memfd, Interop.Libc.F_SEAL_GROW); // sealed, but it could still shrink under the dma-buf

        AssertRefused(Interop.Libc.EINVAL, memfd, offset: 0, size: s_page);
    }

    [Fact]
    public void Create_FromASealedMemfd_IsADmaBufOfThoseBytes()
    {
        using SafeFdHandle memfd = SealedMemfd(2);
        using SafeFdHandle dmaBuf = Create(memfd, offset: s_page, size: s_page);

        Assert.Equal(s_page, Interop.Libc.FStat(dmaBuf).Size);
        Assert.StartsWith("/dmabuf:", Interop.Libc.FdLinkTarget(dmaBuf), StringComparison.Ordinal);
        WriteThroughMapping(memfd, s_page, 0x42);
        Assert.All(ReadThroughMapping(dmaBuf, 0, s_page), b => Assert.Equal(0x42, b));
    }

    [Fact]
    public unsafe void CreateList_IsThePagesInListOrder_AndTracksLaterWritesToTheMemfd()
    {
        const int pages = 4;
        using SafeFdHandle memfd = SealedMemfd(pages);
        // The dma-buf: memfd pages 2-3, then page 0 (out of order on purpose).
        Span<Interop.Libc.udmabuf_create_item> items =
        [
            new() { memfd = (uint)memfd.Number, offset = 2UL * (ulong)s_page, size = 2UL * (ulong)s_page },
            new() { memfd = (uint)memfd.Number, offset = 0, size = (ulong)s_page },
        ];
        using SafeFdHandle dmaBuf = CreateList(items);

        // Written after the dma-buf exists: it must see these bytes, not a copy taken at creation.
        for (int page = 0; page < pages; page++)
        {
            WriteThroughMapping(memfd, (long)page * s_page, (byte)(0x10 + page));
        }

        byte[] seen = ReadThroughMapping(dmaBuf, 0, 3 * s_page);
        Assert.Equal(3L * s_page, Interop.Libc.FStat(dmaBuf).Size);
        Assert.All(seen.AsSpan(0, s_page).ToArray(), b => Assert.Equal(0x12, b));
        Assert.All(seen.AsSpan(s_page, s_page).ToArray(), b => Assert.Equal(0x13, b));
        Assert.All(seen.AsSpan(2 * s_page, s_page).ToArray(), b => Assert.Equal(0x10, b));

        // And the other way: a write through the dma-buf lands in the memfd's page 0.
        WriteThroughMapping(dmaBuf, 2L * s_page, 0x77);
        Assert.All(ReadThroughMapping(memfd, 0, s_page), b => Assert.Equal(0x77, b));
    }

    [Fact]
    public void Create_Refusals_LeaveNoDescriptor()
    {
        using SafeFdHandle device = Device();
        using SafeFdHandle memfd = SealedMemfd(2);

        Leaks.AssertNone(() =>
        {
            Assert.Throws<LinuxErrorException>(() => Create(device, memfd, offset: 1, size: s_page, Interop.Libc.UDMABUF_FLAGS_CLOEXEC));
            Assert.Throws<LinuxErrorException>(() => Create(device, memfd, offset: 0, size: s_page + 1, Interop.Libc.UDMABUF_FLAGS_CLOEXEC));
        });
    }

    private static SafeFdHandle Device()
    {
        LinuxFeatures features = KernelRequirement.Require(f => f.RequireUdmabuf());
        return Interop.Libc.OpenReadWrite(features.UdmabufNode);
    }

    private static SafeFdHandle SealedMemfd(int pages)
    {
        SafeFdHandle memfd = Interop.Libc.CreateMemfd("udmabuf-selftest", (long)pages * s_page);
        Interop.Libc.AddSeals(memfd, Interop.Libc.F_SEAL_SHRINK);
        return memfd;
    }

    /// <summary>Asserts that <c>UDMABUF_CREATE</c> over <paramref name="memfd"/> fails with <paramref name="errno"/>; disposes the memfd.</summary>
    private static void AssertRefused(int errno, SafeFdHandle memfd, long offset, long size, uint flags = Interop.Libc.UDMABUF_FLAGS_CLOEXEC)
    {
        using (memfd)
        {
            using SafeFdHandle device = Device();
            LinuxErrorException e = Assert.Throws<LinuxErrorException>(() => Create(device, memfd, offset, size, flags));
            Assert.Equal(Interop.Libc.ErrnoName(errno), e.ErrnoName);
            Assert.Contains("UDMABUF_CREATE", e.Message, StringComparison.Ordinal);
        }
    }

    private static SafeFdHandle Create(SafeFdHandle memfd, long offset, long size)
    {
        using SafeFdHandle device = Device();
        return Create(device, memfd, offset, size, Interop.Libc.UDMABUF_FLAGS_CLOEXEC);
    }

    private static unsafe SafeFdHandle Create(SafeFdHandle device, SafeFdHandle memfd, long offset, long size, uint flags)
    {
        var create = new Interop.Libc.udmabuf_create { memfd = (uint)memfd.Number, flags = flags, offset = (ulong)offset, size = (ulong)size };
        return new SafeFdHandle(Interop.Libc.Ioctl(device, Interop.Libc.UDMABUF_CREATE, &create, "ioctl(UDMABUF_CREATE)"));
    }

    private static unsafe SafeFdHandle CreateList(ReadOnlySpan<Interop.Libc.udmabuf_create_item> items)
    {
        using SafeFdHandle device = Device();
        int header = sizeof(Interop.Libc.udmabuf_create_list);
        byte[] argument = new byte[header + (items.Length * sizeof(Interop.Libc.udmabuf_create_item))];
        MemoryMarshal.Write(argument, new Interop.Libc.udmabuf_create_list { flags = Interop.Libc.UDMABUF_FLAGS_CLOEXEC, count = (uint)items.Length });
        MemoryMarshal.AsBytes(items).CopyTo(argument.AsSpan(header));
        fixed (byte* p = argument)
        {
            return new SafeFdHandle(Interop.Libc.Ioctl(device, Interop.Libc.UDMABUF_CREATE_LIST, p, "ioctl(UDMABUF_CREATE_LIST)"));
        }
    }

    private static unsafe void WriteThroughMapping(SafeFdHandle fd, long offset, byte value)
    {
        long length = offset + s_page;
        nint address = Interop.Libc.MapShared(fd, length, populate: false);
        try
        {
            new Span<byte>((byte*)address + offset, s_page).Fill(value);
        }
        finally
        {
            Interop.Libc.Unmap(address, length);
        }
    }

    private static unsafe byte[] ReadThroughMapping(SafeFdHandle fd, long offset, int length)
    {
        long mapped = offset + length;
        nint address = Interop.Libc.MapShared(fd, mapped, populate: false);
        try
        {
            return new ReadOnlySpan<byte>((byte*)address + offset, length).ToArray();
        }
        finally
        {
            Interop.Libc.Unmap(address, mapped);
        }
    }
}

namespace DmaBuf.Linux.Tests;

public sealed class ImportCacheTests
{
    private const long Size = 16 * 1024;

    [Fact]
    public void Import_SameUnderlyingBuffer_ReturnsTheSameObject()
    {
        var exporter = new MemfdExporter(new MmapCache());
        using DmaBufHandle original = exporter.Allocate(Size);
        var imports = new ImportCache(new MmapCache());
        SafeFdHandle fd = original.Buffer.GetLinuxBuffer().Fd;

        using DmaBufHandle a = imports.Import(Interop.Libc.Duplicate(fd), Size);
        using DmaBufHandle b = imports.Import(Interop.Libc.Duplicate(fd), Size);

        Assert.Same(a.Buffer, b.Buffer);
        Assert.Equal(2, a.Buffer.ReferenceCount);
        Assert.Equal((1L, 1L), (imports.Hits, imports.Misses));
        Assert.Equal(1, imports.Count);
        Assert.Equal("import:memfd", a.Buffer.ExporterName);
    }

    [Fact]
    public void Cache_NeverKeepsABufferAlive()
    {
        var exporter = new MemfdExporter(new MmapCache());
        using DmaBufHandle original = exporter.Allocate(Size);
        var imports = new ImportCache(new MmapCache());
        SafeFdHandle fd = original.Buffer.GetLinuxBuffer().Fd;

        DmaBufHandle first = imports.Import(Interop.Libc.Duplicate(fd), Size);
        DmaBuffer firstBuffer = first.Buffer;
        first.Dispose();

        Assert.Equal(DmaBufState.Released, firstBuffer.State);
        Assert.Equal(0, imports.Count);
        Assert.Null(imports.TryGet(original.Buffer.GetLinuxBuffer().Identity));
        using DmaBufHandle again = imports.Import(Interop.Libc.Duplicate(fd), Size);
        Assert.NotSame(firstBuffer, again.Buffer);
    }

    [Fact]
    public void Import_ClaimingAnotherSizeForAKnownBuffer_IsRefused()
    {
        var exporter = new MemfdExporter(new MmapCache());
        using DmaBufHandle original = exporter.Allocate(Size);
        var imports = new ImportCache(new MmapCache());
        SafeFdHandle fd = original.Buffer.GetLinuxBuffer().Fd;
        using DmaBufHandle first = imports.Import(Interop.Libc.Duplicate(fd), Size);

        BufferImportException e = Assert.Throws<BufferImportException>(() => imports.Import(Interop.Libc.Duplicate(fd), Size / 2));

        Assert.Equal(ChannelErrorReason.BadBufferSize, e.Reason);
    }

    /// <summary>
    /// Two imports of one buffer racing, claiming different sizes: whichever registers first, the other is refused
    /// (<c>BadBufferSize</c>), also when it lost the race inside the import (it found the winner only after mapping
    /// its own). Before, the loser took the winner's buffer whatever size it had claimed (an outside review).
    /// </summary>
    [Fact]
    public void RacingImportsClaimingDifferentSizes_OneIsRefused_InEveryRound()
    {
        const int Rounds = 400;
        var exporter = new MemfdExporter(new MmapCache());
        using DmaBufHandle original = exporter.Allocate(Size);
        SafeFdHandle fd = original.Buffer.GetLinuxBuffer().Fd;
        int bothTaken = 0;
        for (int round = 0; round < Rounds; round++)
        {
            var imports = new ImportCache(new MmapCache());
            using var start = new Barrier(2);
            Background<DmaBufHandle?> Racer(long size) => Background<DmaBufHandle?>.Start(() =>
            {
                SafeFdHandle mine = Interop.Libc.Duplicate(fd);
                start.SignalAndWait(Background<int>.Guard);
                try
                {
                    return imports.Import(mine, size);
                }
                catch (BufferImportException e) when (e.Reason == ChannelErrorReason.BadBufferSize)
                {
                    return null;
                }
            });
            Background<DmaBufHandle?> whole = Racer(Size), half = Racer(Size / 2);
            Assert.True(whole.Wait(Background<int>.Guard) && half.Wait(Background<int>.Guard));
            using DmaBufHandle? a = whole.Result, b = half.Result;
            Assert.False(a is null && b is null, "both imports were refused");
            if (a is not null && b is not null)
            {
                bothTaken++;
            }
        }

        Assert.True(bothTaken == 0, $"in {bothTaken} of {Rounds} rounds both claims were taken, one of them with the other's size");
    }

    [Fact]
    public void Import_Pipe_IsRefusedAndClosed() => AssertRefused(ChannelErrorReason.NotASharedBuffer, () =>
    {
        (SafeFdHandle read, SafeFdHandle write) = Interop.Libc.Pipe();
        write.Dispose();
        return read;
    });

    [Fact]
    public void Import_RegularFile_IsRefusedAndClosed()
    {
        string path = Path.GetTempFileName();
        try
        {
            File.WriteAllBytes(path, new byte[Size * 2]);
            AssertRefused(ChannelErrorReason.NotASharedBuffer, () => Interop.Libc.OpenReadWrite(path));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Import_Socket_IsRefusedAndClosed() => AssertRefused(ChannelErrorReason.NotASharedBuffer, () =>
    {
        (SafeFdHandle a, SafeFdHandle b) = Interop.Libc.SocketPair(Interop.Libc.SOCK_STREAM);
        b.Dispose();
        return a;
    });

    [Fact]
    public void Import_UnsealedMemfd_IsRefusedAndClosed() =>
        AssertRefused(ChannelErrorReason.NotSealed, () => Interop.Libc.CreateMemfd("unsealed", Size));

    [Fact]
    public void Import_MemfdSmallerThanClaimed_IsRefusedAndClosed() => AssertRefused(ChannelErrorReason.BufferTooSmall, () =>
    {
        SafeFdHandle fd = Interop.Libc.CreateMemfd("small", Size / 2);
        Interop.Libc.AddSeals(fd, MemfdExporter.Seals);
        return fd;
    });

    [Fact]
    public void Import_ReadOnlyDescriptor_IsRefusedAndClosed()
    {
        var exporter = new MemfdExporter(new MmapCache());
        using DmaBufHandle original = exporter.Allocate(Size);
        string path = $"/proc/self/fd/{original.Buffer.GetLinuxBuffer().Fd.Number}";

        AssertRefused(ChannelErrorReason.NotASharedBuffer, () => Interop.CheckFd(Interop.Libc.open(path, Interop.Libc.O_RDONLY | Interop.Libc.O_CLOEXEC, 0), "open"));
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(-4096L)]
    [InlineData(1L << 40)]
    public void Import_ImpossibleClaimedSize_IsRefusedAndClosed(long claimed)
    {
        var imports = new ImportCache(new MmapCache(), maxBufferSize: 1L << 30);
        Leaks.AssertNone(() =>
        {
            SafeFdHandle fd = Interop.Libc.CreateMemfd("sized", Size);
            Interop.Libc.AddSeals(fd, MemfdExporter.Seals);
            BufferImportException e = Assert.Throws<BufferImportException>(() => imports.Import(fd, claimed));
            Assert.Equal(ChannelErrorReason.BadBufferSize, e.Reason);
            Assert.True(fd.IsClosed);
        });
    }

    private static void AssertRefused(ChannelErrorReason reason, Func<SafeFdHandle> make)
    {
        var imports = new ImportCache(new MmapCache());
        Leaks.AssertNone(() =>
        {
            SafeFdHandle fd = make();
            BufferImportException e = Assert.Throws<BufferImportException>(() => imports.Import(fd, Size));
            Assert.Equal(reason, e.Reason);
            Assert.True(fd.IsClosed, "a refused descriptor is closed");
            Assert.Equal(0, imports.Count);
        });
        Assert.Equal(0, imports.Cache.Statistics.LiveMappings);
    }
}

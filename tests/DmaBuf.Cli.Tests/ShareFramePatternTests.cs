using System.Runtime.InteropServices;

namespace DmaBuf.Cli.Tests;

/// <summary>
/// The share frame pattern: the checksum <see cref="ShareFramePattern.Fill"/> computes while it streams the frame out
/// must be the one the consumer computes from the bytes, on aligned and unaligned frames of any length, and any
/// changed or moved word must change it.
/// </summary>
public sealed unsafe class ShareFramePatternTests
{
    [Theory]
    [InlineData(0, 0)]
    [InlineData(7, 0)]
    [InlineData(4096, 0)]
    [InlineData(4096, 8)]
    [InlineData(4099, 3)]
    [InlineData(1 << 20, 0)]
    [InlineData((1 << 20) + 13, 1)]
    public void FillReturnsTheChecksumOfWhatItWrote(int length, int misalign)
    {
        byte* block = (byte*)NativeMemory.AlignedAlloc((nuint)(length + 64), 64);
        try
        {
            var frame = new Span<byte>(block + misalign, length);
            frame.Fill(0xEE);
            ulong written = ShareFramePattern.Fill(frame, 42);
            Assert.Equal(written, ShareFramePattern.Checksum(frame));
            if (length >= 8)
            {
                Assert.NotEqual(written, ShareFramePattern.Fill(frame, 43)); // another frame, another sum
            }
        }
        finally
        {
            NativeMemory.AlignedFree(block);
        }
    }

    [Fact]
    public void AChangedOrMovedWord_ChangesTheChecksum()
    {
        byte[] frame = new byte[64 * 1024];
        ulong sum = ShareFramePattern.Fill(frame, 7);
        byte[] changed = (byte[])frame.Clone();
        changed[40_000] ^= 1;
        Assert.NotEqual(sum, ShareFramePattern.Checksum(changed));

        byte[] moved = (byte[])frame.Clone();
        Span<ulong> words = MemoryMarshal.Cast<byte, ulong>(moved.AsSpan());
        (words[100], words[5000]) = (words[5000], words[100]);
        Assert.NotEqual(sum, ShareFramePattern.Checksum(moved));
    }

    [Fact]
    public void TheSameFrameNumber_GivesTheSameBytes()
    {
        byte[] a = new byte[10_000];
        byte[] b = new byte[10_000];
        ShareFramePattern.Fill(a, 3);
        ShareFramePattern.Fill(b, 3);
        Assert.Equal(a, b);
    }
}

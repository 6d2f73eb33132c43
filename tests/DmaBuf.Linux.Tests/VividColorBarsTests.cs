using DmaBuf.Linux.TestPeer;
using DmaBuf.Linux.V4l2;

namespace DmaBuf.Linux.Tests;

/// <summary>
/// The frame check the vivid tests rely on, on made-up frames: it accepts the bars with status text over them, and
/// refuses what a wrong buffer, a half-written frame or stale bytes would look like.
/// </summary>
public sealed class VividColorBarsTests
{
    private static readonly V4l2PixFormat s_format = new(640, 360, V4l2FourCC.Yuyv) { BytesPerLine = 1280, SizeImage = 1280 * 360 };

    [Fact]
    public void Pattern_IsEightBarsDescendingFromWhiteToBlack()
    {
        Assert.Equal(8, VividColorBars.Luma.Length);
        for (int i = 1; i < 8; i++)
        {
            Assert.True(VividColorBars.Luma[i] < VividColorBars.Luma[i - 1]);
        }

        Assert.DoesNotContain(VividColorBars.Poison, VividColorBars.Luma.ToArray());
        Assert.Equal((128, 128), (VividColorBars.Cb[0], VividColorBars.Cr[0])); // white and black carry no colour
        Assert.Equal((128, 128), (VividColorBars.Cb[7], VividColorBars.Cr[7]));
    }

    [Fact]
    public void AssertFrame_AcceptsTheBars_WithTextInTheTextBand()
    {
        byte[] frame = Frame();
        frame[(40 * 1280) + 200] = VividColorBars.Luma[7]; // black text on a bar
        frame[(100 * 1280) + 900] = VividColorBars.Luma[0]; // white text

        VividColorBars.AssertFrame(frame, s_format, "made-up frame");
    }

    [Theory]
    [InlineData(359 * 1280, 4, "poison")] // the last line not written
    [InlineData(0, 1280 * 360, "poison")] // nothing written
    [InlineData((200 * 1280) + 161, 1, "line 200")] // a wrong chroma byte in the bottom half
    [InlineData((5 * 1280) + 1278, 1, "line 5")] // a wrong byte above the text
    [InlineData((359 * 1280) + 320, 1, "not uniform")] // a wrong luma in the bottom line
    public void AssertFrame_RefusesFramesThatAreNotVivids(int offset, int length, string expected)
    {
        byte[] frame = Frame();
        frame.AsSpan(offset, length).Fill(VividColorBars.Poison);

        Exception e = Assert.ThrowsAny<Exception>(() => VividColorBars.AssertFrame(frame, s_format, "made-up frame"));

        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void AssertFrame_RefusesAStrayLumaInTheTextBand_AndBarsOfAnotherOrder()
    {
        byte[] stray = Frame();
        stray[(60 * 1280) + 10] = 200;
        Assert.Contains("none of the bar levels", Assert.ThrowsAny<Exception>(() => VividColorBars.AssertFrame(stray, s_format, "f")).Message, StringComparison.Ordinal);

        byte[] mirrored = Frame();
        for (int y = 0; y < 360; y++)
        {
            Span<byte> line = mirrored.AsSpan(y * 1280, 1280);
            for (int x = 0; x < 320; x++)
            {
                (line[2 * x], line[1278 - (2 * x)]) = (line[1278 - (2 * x)], line[2 * x]); // swap luma left-right
            }
        }

        Assert.Contains("bar 0 is Y 16", Assert.ThrowsAny<Exception>(() => VividColorBars.AssertFrame(mirrored, s_format, "f")).Message, StringComparison.Ordinal);
    }

    private static byte[] Frame()
    {
        byte[] line = VividColorBars.Line(640);
        var frame = new byte[1280 * 360];
        for (int y = 0; y < 360; y++)
        {
            line.CopyTo(frame, y * 1280);
        }

        return frame;
    }
}

using DmaBuf.Linux.V4l2;

namespace DmaBuf.Linux.TestPeer;

/// <summary>
/// What vivid's capture node draws with its default controls on input 0 (the webcam input): the 75% colour bar test
/// pattern of the kernel's test pattern generator (drivers/media/common/v4l2-tpg), eight vertical bars of equal width,
/// white, yellow, cyan, green, magenta, red, blue, black, left to right. vivid writes a few lines of status text over
/// it (vivid-kthread-cap.c, from line 16 down); above and well below that text every line is the bar line.
/// </summary>
/// <remarks>
/// The YUYV values below were read out of vivid's frames on Debian's 6.1 kernel (sRGB colorspace, default BT.601
/// encoding, limited range). They are close to the textbook BT.601 limited-range values of 75% bars
/// (Y 180 162 131 112 84 65 35 16), vivid's own conversion landing one or two steps lower.
/// </remarks>
public static class VividColorBars
{
    /// <summary>The byte the tests fill a buffer with before handing it to the device; no bar has it as luma.</summary>
    public const byte Poison = 0xA5;

    /// <summary>The first line of vivid's status text; the lines above it are pure bars.</summary>
    public const int TextTop = 16;

    /// <summary>Luma (Y) of the eight bars, white to black: strictly descending.</summary>
    public static ReadOnlySpan<byte> Luma => [179, 160, 130, 111, 83, 64, 34, 16];

    /// <summary>Cb of the eight bars.</summary>
    public static ReadOnlySpan<byte> Cb => [128, 44, 156, 72, 183, 99, 211, 128];

    /// <summary>Cr of the eight bars.</summary>
    public static ReadOnlySpan<byte> Cr => [128, 141, 44, 58, 197, 211, 114, 128];

    /// <summary>The bar that pixel <paramref name="x"/> of a line <paramref name="width"/> pixels wide lies in.</summary>
    public static int BarOf(int x, int width) => x * 8 / width;

    /// <summary>One YUYV line of the bars, <paramref name="width"/> pixels (even) wide.</summary>
    public static byte[] Line(int width)
    {
        var line = new byte[width * 2];
        for (int x = 0; x < width; x += 2)
        {
            int bar = BarOf(x, width);
            line[(2 * x) + 0] = Luma[bar];
            line[(2 * x) + 1] = Cb[bar];
            line[(2 * x) + 2] = Luma[BarOf(x + 1, width)];
            line[(2 * x) + 3] = Cr[bar];
        }

        return line;
    }

    /// <summary>
    /// Checks that <paramref name="image"/> is one of vivid's frames in <paramref name="format"/> (YUYV), so that
    /// neither garbage, another buffer's stale bytes nor the poison the test wrote before queueing it would pass:
    /// <list type="bullet">
    /// <item>no run of four poison bytes is left anywhere in the image;</item>
    /// <item>in the bottom line, each bar's luma is uniform, the eight bars strictly descend from white to black, and
    /// their luma and chroma are the values above;</item>
    /// <item>every line above the status text and every line of the bottom half is exactly the bar line;</item>
    /// <item>every luma byte of the image, text included, is one of the eight bar levels (the text is drawn in the
    /// bar white and black).</item>
    /// </list>
    /// The first difference found is thrown as an <see cref="InvalidDataException"/> naming <paramref name="what"/>,
    /// the line and the pixel. The tests and the test peer (which checks the frames it receives) share this check.
    /// </summary>
    public static void AssertFrame(ReadOnlySpan<byte> image, V4l2PixFormat format, string what)
    {
        Require(format.PixelFormat == V4l2FourCC.Yuyv, $"{what}: format {format.PixelFormat}, expected YUYV");
        Require(image.Length >= format.SizeImage, $"{what}: {image.Length} bytes, the format needs {format.SizeImage}");
        image = image[..format.SizeImage];
        int width = format.Width;
        int stride = format.BytesPerLine;

        int poison = image.IndexOf([Poison, Poison, Poison, Poison]);
        Require(poison < 0, $"{what}: the poison is still there at byte {poison} (line {poison / stride}): the device did not write the whole frame.");

        AssertBottomLineBars(image.Slice((format.Height - 1) * stride, width * 2), width, what);

        byte[] bars = Line(width);
        for (int y = 0; y < format.Height; y++)
        {
            if (y >= TextTop && y < format.Height / 2)
            {
                continue; // the status text band
            }

            ReadOnlySpan<byte> line = image.Slice(y * stride, width * 2);
            int diff = line.CommonPrefixLength(bars);
            if (diff != line.Length)
            {
                throw new InvalidDataException($"{what}: line {y} differs from the bar line at byte {diff} (pixel {diff / 2}): {line[diff]}, expected {bars[diff]}.");
            }
        }

        Span<bool> level = stackalloc bool[256];
        foreach (byte y in Luma)
        {
            level[y] = true;
        }

        for (int y = 0; y < format.Height; y++)
        {
            ReadOnlySpan<byte> line = image.Slice(y * stride, width * 2);
            for (int i = 0; i < line.Length; i += 2)
            {
                if (!level[line[i]])
                {
                    throw new InvalidDataException($"{what}: pixel {i / 2} of line {y} has luma {line[i]}, which is none of the bar levels.");
                }
            }
        }
    }

    /// <summary>Throws <see cref="InvalidDataException"/> with <paramref name="message"/> unless <paramref name="condition"/>.</summary>
    private static void Require(bool condition, string message)
    {
        if (!condition)
        {
            throw new InvalidDataException(message);
        }
    }

    /// <summary>Measures the bars of one line and checks them against the pattern.</summary>
    private static void AssertBottomLineBars(ReadOnlySpan<byte> line, int width, string what)
    {
        int previous = 256;
        for (int bar = 0; bar < 8; bar++)
        {
            int first = ((bar * width) + 7) / 8; // the first pixel x with BarOf(x) == bar
            int end = (((bar + 1) * width) + 7) / 8;
            byte y0 = line[2 * first];
            for (int x = first; x < end; x++)
            {
                if (line[2 * x] != y0)
                {
                    throw new InvalidDataException($"{what}: bar {bar} of the bottom line is not uniform: pixel {x} has luma {line[2 * x]}, pixel {first} {y0}.");
                }
            }

            Require(y0 < previous, $"{what}: the bars do not descend from white to black: bar {bar} has luma {y0} after {previous}.");
            previous = y0;
            int pair = first & ~1;
            Require(
                (y0, line[(2 * pair) + 1], line[(2 * pair) + 3]) == (Luma[bar], Cb[bar], Cr[bar]),
                $"{what}: bar {bar} is Y {y0} Cb {line[(2 * pair) + 1]} Cr {line[(2 * pair) + 3]}, expected {Luma[bar]} {Cb[bar]} {Cr[bar]}.");
        }
    }
}

using System.Globalization;

namespace DmaBuf.Linux.V4l2;

/// <summary>Capability flags of a V4L2 device (<c>V4L2_CAP_*</c> in <c>struct v4l2_capability</c>).</summary>
[Flags]
public enum V4l2Caps : uint
{
    /// <summary><c>V4L2_CAP_VIDEO_CAPTURE</c>: a single-planar video capture queue.</summary>
    VideoCapture = 0x00000001,

    /// <summary><c>V4L2_CAP_VIDEO_OUTPUT</c>: a single-planar video output queue.</summary>
    VideoOutput = 0x00000002,

    /// <summary><c>V4L2_CAP_VIDEO_OVERLAY</c>.</summary>
    VideoOverlay = 0x00000004,

    /// <summary><c>V4L2_CAP_VBI_CAPTURE</c>.</summary>
    VbiCapture = 0x00000010,

    /// <summary><c>V4L2_CAP_VBI_OUTPUT</c>.</summary>
    VbiOutput = 0x00000020,

    /// <summary><c>V4L2_CAP_SLICED_VBI_CAPTURE</c>.</summary>
    SlicedVbiCapture = 0x00000040,

    /// <summary><c>V4L2_CAP_SLICED_VBI_OUTPUT</c>.</summary>
    SlicedVbiOutput = 0x00000080,

    /// <summary><c>V4L2_CAP_RDS_CAPTURE</c>.</summary>
    RdsCapture = 0x00000100,

    /// <summary><c>V4L2_CAP_VIDEO_OUTPUT_OVERLAY</c>.</summary>
    VideoOutputOverlay = 0x00000200,

    /// <summary><c>V4L2_CAP_HW_FREQ_SEEK</c>.</summary>
    HwFreqSeek = 0x00000400,

    /// <summary><c>V4L2_CAP_RDS_OUTPUT</c>.</summary>
    RdsOutput = 0x00000800,

    /// <summary><c>V4L2_CAP_VIDEO_CAPTURE_MPLANE</c>: a multi-planar video capture queue.</summary>
    VideoCaptureMplane = 0x00001000,

    /// <summary><c>V4L2_CAP_VIDEO_OUTPUT_MPLANE</c>: a multi-planar video output queue.</summary>
    VideoOutputMplane = 0x00002000,

    /// <summary><c>V4L2_CAP_VIDEO_M2M_MPLANE</c>: a multi-planar memory-to-memory device.</summary>
    VideoM2mMplane = 0x00004000,

    /// <summary><c>V4L2_CAP_VIDEO_M2M</c>: a memory-to-memory device.</summary>
    VideoM2m = 0x00008000,

    /// <summary><c>V4L2_CAP_TUNER</c>.</summary>
    Tuner = 0x00010000,

    /// <summary><c>V4L2_CAP_AUDIO</c>.</summary>
    Audio = 0x00020000,

    /// <summary><c>V4L2_CAP_RADIO</c>.</summary>
    Radio = 0x00040000,

    /// <summary><c>V4L2_CAP_MODULATOR</c>.</summary>
    Modulator = 0x00080000,

    /// <summary><c>V4L2_CAP_SDR_CAPTURE</c>.</summary>
    SdrCapture = 0x00100000,

    /// <summary><c>V4L2_CAP_EXT_PIX_FORMAT</c>: the extended fields of <c>struct v4l2_pix_format</c> are valid.</summary>
    ExtPixFormat = 0x00200000,

    /// <summary><c>V4L2_CAP_SDR_OUTPUT</c>.</summary>
    SdrOutput = 0x00400000,

    /// <summary><c>V4L2_CAP_META_CAPTURE</c>.</summary>
    MetaCapture = 0x00800000,

    /// <summary><c>V4L2_CAP_READWRITE</c>: read()/write() I/O.</summary>
    ReadWrite = 0x01000000,

    /// <summary><c>V4L2_CAP_STREAMING</c>: streaming I/O (REQBUFS, QBUF, DQBUF).</summary>
    Streaming = 0x04000000,

    /// <summary><c>V4L2_CAP_META_OUTPUT</c>.</summary>
    MetaOutput = 0x08000000,

    /// <summary><c>V4L2_CAP_TOUCH</c>.</summary>
    Touch = 0x10000000,

    /// <summary><c>V4L2_CAP_IO_MC</c>: inputs and outputs are set through the media controller.</summary>
    IoMc = 0x20000000,

    /// <summary><c>V4L2_CAP_DEVICE_CAPS</c>: <see cref="V4l2Capability.DeviceCaps"/> is filled in.</summary>
    DeviceCaps = 0x80000000,
}

/// <summary>The memory a buffer queue uses (<c>enum v4l2_memory</c>); the two this interop supports.</summary>
public enum V4l2Memory
{
    /// <summary><c>V4L2_MEMORY_MMAP</c>: the driver allocates the buffers; they can be exported as dma-bufs.</summary>
    Mmap = 1,

    /// <summary><c>V4L2_MEMORY_DMABUF</c>: the application brings a dma-buf with every queued buffer.</summary>
    DmaBuf = 4,
}

/// <summary>Field order of a frame (<c>enum v4l2_field</c>).</summary>
public enum V4l2Field
{
    /// <summary><c>V4L2_FIELD_ANY</c>: the driver chooses.</summary>
    Any = 0,

    /// <summary><c>V4L2_FIELD_NONE</c>: progressive frames.</summary>
    None = 1,

    /// <summary><c>V4L2_FIELD_TOP</c>.</summary>
    Top = 2,

    /// <summary><c>V4L2_FIELD_BOTTOM</c>.</summary>
    Bottom = 3,

    /// <summary><c>V4L2_FIELD_INTERLACED</c>.</summary>
    Interlaced = 4,

    /// <summary><c>V4L2_FIELD_SEQ_TB</c>.</summary>
    SeqTb = 5,

    /// <summary><c>V4L2_FIELD_SEQ_BT</c>.</summary>
    SeqBt = 6,

    /// <summary><c>V4L2_FIELD_ALTERNATE</c>.</summary>
    Alternate = 7,

    /// <summary><c>V4L2_FIELD_INTERLACED_TB</c>.</summary>
    InterlacedTb = 8,

    /// <summary><c>V4L2_FIELD_INTERLACED_BT</c>.</summary>
    InterlacedBt = 9,
}

/// <summary>Flags of a buffer (<c>V4L2_BUF_FLAG_*</c> in <c>struct v4l2_buffer</c>); the ones a capture queue reports.</summary>
[Flags]
public enum V4l2BufferFlags : uint
{
    /// <summary><c>V4L2_BUF_FLAG_MAPPED</c>.</summary>
    Mapped = 0x00000001,

    /// <summary><c>V4L2_BUF_FLAG_QUEUED</c>.</summary>
    Queued = 0x00000002,

    /// <summary><c>V4L2_BUF_FLAG_DONE</c>.</summary>
    Done = 0x00000004,

    /// <summary><c>V4L2_BUF_FLAG_ERROR</c>: the data may be corrupt; the buffer is still dequeued.</summary>
    Error = 0x00000040,

    /// <summary><c>V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC</c>: the timestamp is of <c>CLOCK_MONOTONIC</c>.</summary>
    TimestampMonotonic = 0x00002000,

    /// <summary><c>V4L2_BUF_FLAG_TIMESTAMP_COPY</c>: the timestamp was copied from an output buffer.</summary>
    TimestampCopy = 0x00004000,

    /// <summary><c>V4L2_BUF_FLAG_LAST</c>: the last buffer of a stream.</summary>
    Last = 0x00100000,
}

/// <summary>
/// A four-character code naming a pixel format (<c>v4l2_fourcc</c>): the characters packed little-endian into 32 bits,
/// bit 31 marking a big-endian variant.
/// </summary>
/// <param name="Value">The packed code, as <c>pixelformat</c> holds it.</param>
public readonly record struct V4l2FourCC(uint Value)
{
    private const uint BigEndian = 1u << 31;

    /// <summary><c>V4L2_PIX_FMT_YUYV</c>: packed 4:2:2, bytes Y0 Cb Y1 Cr for each two pixels.</summary>
    public static V4l2FourCC Yuyv { get; } = FromString("YUYV");

    /// <summary>The code of four ASCII characters, e.g. <c>YUYV</c>.</summary>
    /// <exception cref="ArgumentException"><paramref name="code"/> is not four ASCII characters.</exception>
    public static V4l2FourCC FromString(string code)
    {
        ArgumentNullException.ThrowIfNull(code);
        if (code.Length != 4 || !code.All(c => c is >= ' ' and <= '~'))
        {
            throw new ArgumentException($"A fourcc is four printable ASCII characters; '{code}' is not.", nameof(code));
        }

        return new V4l2FourCC(code[0] | ((uint)code[1] << 8) | ((uint)code[2] << 16) | ((uint)code[3] << 24));
    }

    /// <summary>The four characters (trailing spaces kept), with <c>-BE</c> for a big-endian variant.</summary>
    public override string ToString()
    {
        uint v = Value & ~BigEndian;
        Span<char> chars = [(char)(v & 0xff), (char)((v >> 8) & 0xff), (char)((v >> 16) & 0xff), (char)(v >> 24)];
        foreach (char c in chars)
        {
            if (c is < ' ' or > '~')
            {
                return "0x" + Value.ToString("x8", CultureInfo.InvariantCulture);
            }
        }

        return new string(chars) + ((Value & BigEndian) != 0 ? "-BE" : "");
    }
}

/// <summary>What <c>VIDIOC_QUERYCAP</c> says about a device (<c>struct v4l2_capability</c>).</summary>
/// <param name="Driver">The driver's name, e.g. <c>vivid</c>.</param>
/// <param name="Card">The device's name, e.g. <c>vivid</c>.</param>
/// <param name="BusInfo">Where it sits, e.g. <c>platform:vivid-000</c>.</param>
/// <param name="Version">The driver's version (for in-tree drivers the kernel's, <c>KERNEL_VERSION</c>).</param>
/// <param name="Capabilities">What the whole physical device can do (all its nodes).</param>
/// <param name="DeviceCaps">What this node can do (valid when <paramref name="Capabilities"/> has <see cref="V4l2Caps.DeviceCaps"/>).</param>
public sealed record V4l2Capability(string Driver, string Card, string BusInfo, Version Version, V4l2Caps Capabilities, V4l2Caps DeviceCaps)
{
    /// <summary>What this node can do: <see cref="DeviceCaps"/> when the driver fills it in, else <see cref="Capabilities"/>.</summary>
    public V4l2Caps NodeCaps => (Capabilities & V4l2Caps.DeviceCaps) != 0 ? DeviceCaps : Capabilities;
}

/// <summary>One format a queue offers (<c>struct v4l2_fmtdesc</c> from <c>VIDIOC_ENUM_FMT</c>).</summary>
/// <param name="Index">Its position in the driver's list.</param>
/// <param name="PixelFormat">The format's code.</param>
/// <param name="Description">The driver's description, e.g. <c>YUYV 4:2:2</c>.</param>
/// <param name="Flags">The <c>V4L2_FMT_FLAG_*</c> bits (1: compressed, 2: emulated in software).</param>
public sealed record V4l2FmtDesc(int Index, V4l2FourCC PixelFormat, string Description, uint Flags);

/// <summary>
/// The format of a single-planar image (<c>struct v4l2_pix_format</c>). Pass one to <see cref="V4l2Device.SetFormat"/>
/// with the size, code and field wanted (the rest zero lets the driver choose); the device returns what it will produce.
/// </summary>
/// <param name="Width">Pixels per line.</param>
/// <param name="Height">Lines.</param>
/// <param name="PixelFormat">The format's code, e.g. <see cref="V4l2FourCC.Yuyv"/>.</param>
/// <param name="Field">The field order; <see cref="V4l2Field.None"/> for progressive frames.</param>
public sealed record V4l2PixFormat(int Width, int Height, V4l2FourCC PixelFormat, V4l2Field Field = V4l2Field.None)
{
    /// <summary>Bytes from one line to the next (<c>bytesperline</c>); 0 asks the driver to choose.</summary>
    public int BytesPerLine { get; init; }

    /// <summary>Bytes of a whole image (<c>sizeimage</c>): the least a buffer must hold. Set by the driver.</summary>
    public int SizeImage { get; init; }

    /// <summary><c>enum v4l2_colorspace</c> (e.g. 8, <c>V4L2_COLORSPACE_SRGB</c>); 0 is the default.</summary>
    public uint Colorspace { get; init; }

    /// <summary><c>enum v4l2_ycbcr_encoding</c> (e.g. 1, <c>V4L2_YCBCR_ENC_601</c>); 0 is the colorspace's default.</summary>
    public uint YcbcrEnc { get; init; }

    /// <summary><c>enum v4l2_quantization</c> (1 full range, 2 limited range); 0 is the colorspace's default.</summary>
    public uint Quantization { get; init; }

    /// <summary><c>enum v4l2_xfer_func</c>; 0 is the colorspace's default.</summary>
    public uint XferFunc { get; init; }
}

using System.Buffers.Binary;

namespace DmaBuf.Simulation;

/// <summary>
/// The content a producer writes into frame <c>n</c>: every 4 KiB page starts with a header (magic, frame number, page
/// index, seed) followed by bytes derived from (seed, frame). Two frames, two pages or two seeds never look alike, so a
/// reader that sees the wrong buffer, an old frame or poisoned memory notices.
/// </summary>
public static class FramePattern
{
    /// <summary>Bytes of per-page header.</summary>
    public const int HeaderBytes = 16;

    private const int PageSize = PhysicalMemory.PageSize;
    private const uint Magic = 0x424D_4144; // "DAMB" little-endian: 'D','A','M','B'

    /// <summary>Fills <paramref name="frame"/> with the content of frame <paramref name="frameNumber"/>.</summary>
    /// <param name="frame">The frame's bytes.</param>
    /// <param name="seed">Scenario seed.</param>
    /// <param name="frameNumber">Frame number.</param>
    /// <param name="template">Scratch of at least one page.</param>
    public static void Fill(Span<byte> frame, long seed, int frameNumber, Span<byte> template)
    {
        MakeTemplate(template, seed, frameNumber);
        for (int page = 0, offset = 0; offset < frame.Length; page++, offset += PageSize)
        {
            Span<byte> dest = frame.Slice(offset, Math.Min(PageSize, frame.Length - offset));
            template[..dest.Length].CopyTo(dest);
            WriteHeader(dest, seed, frameNumber, page);
        }
    }

    /// <summary>Whether <paramref name="frame"/> holds exactly the content of frame <paramref name="frameNumber"/>.</summary>
    public static bool Verify(ReadOnlySpan<byte> frame, long seed, int frameNumber, Span<byte> template)
    {
        MakeTemplate(template, seed, frameNumber);
        Span<byte> header = stackalloc byte[HeaderBytes];
        for (int page = 0, offset = 0; offset < frame.Length; page++, offset += PageSize)
        {
            ReadOnlySpan<byte> got = frame.Slice(offset, Math.Min(PageSize, frame.Length - offset));
            int headerLength = Math.Min(HeaderBytes, got.Length);
            template[..headerLength].CopyTo(header);
            WriteHeader(header[..headerLength], seed, frameNumber, page);
            if (!got[..headerLength].SequenceEqual(header[..headerLength]) ||
                !got[headerLength..].SequenceEqual(template[headerLength..got.Length]))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>The frame number in the first page's header, or -1 if the header is not one of ours.</summary>
    public static int FrameNumberOf(ReadOnlySpan<byte> frame) =>
        frame.Length >= HeaderBytes && BinaryPrimitives.ReadUInt32LittleEndian(frame) == Magic
            ? BinaryPrimitives.ReadInt32LittleEndian(frame[4..])
            : -1;

    private static void WriteHeader(Span<byte> page, long seed, int frameNumber, int pageIndex)
    {
        Span<byte> h = stackalloc byte[HeaderBytes];
        BinaryPrimitives.WriteUInt32LittleEndian(h, Magic);
        BinaryPrimitives.WriteInt32LittleEndian(h[4..], frameNumber);
        BinaryPrimitives.WriteInt32LittleEndian(h[8..], pageIndex);
        BinaryPrimitives.WriteInt32LittleEndian(h[12..], (int)seed);
        h[..Math.Min(HeaderBytes, page.Length)].CopyTo(page);
    }

    private static void MakeTemplate(Span<byte> template, long seed, int frameNumber)
    {
        ulong state = (ulong)seed * 0x9E37_79B9_7F4A_7C15UL ^ (ulong)(uint)frameNumber * 0xBF58_476D_1CE4_E5B9UL;
        for (int i = 0; i + 8 <= PageSize; i += 8)
        {
            // SplitMix64 step.
            state += 0x9E37_79B9_7F4A_7C15UL;
            ulong z = state;
            z = (z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D0_49BB_1331_11EBUL;
            BinaryPrimitives.WriteUInt64LittleEndian(template[i..], z ^ (z >> 31));
        }
    }
}

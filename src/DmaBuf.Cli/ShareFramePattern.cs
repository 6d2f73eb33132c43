using System.Numerics;
using System.Runtime.InteropServices;

namespace DmaBuf.Cli;

/// <summary>Frame content that differs per frame, and a position-sensitive checksum to verify it at the consumer.</summary>
internal static class ShareFramePattern
{
    /// <summary>Fills <paramref name="frame"/> with the content of frame number <paramref name="frame"/>.</summary>
    public static void Fill(Span<byte> bytes, long frame)
    {
        Span<ulong> words = MemoryMarshal.Cast<byte, ulong>(bytes);
        ulong seed = ((ulong)frame + 1) * 0x9E3779B97F4A7C15UL;
        int lanes = Vector<ulong>.Count;
        Span<ulong> start = stackalloc ulong[lanes];
        for (int l = 0; l < lanes; l++)
        {
            start[l] = seed + (ulong)l;
        }

        var index = new Vector<ulong>(start);
        var step = new Vector<ulong>((ulong)lanes);
        Span<Vector<ulong>> vectors = MemoryMarshal.Cast<ulong, Vector<ulong>>(words);
        for (int i = 0; i < vectors.Length; i++)
        {
            vectors[i] = index * new Vector<ulong>(0xff51afd7ed558ccdUL);
            index += step;
        }

        for (int i = vectors.Length * lanes; i < words.Length; i++)
        {
            words[i] = (seed + (ulong)i) * 0xff51afd7ed558ccdUL;
        }

        for (int i = words.Length * 8; i < bytes.Length; i++)
        {
            bytes[i] = (byte)(seed >> (i % 8 * 8));
        }
    }

    /// <summary>Fletcher-style sums per vector lane, folded together; any moved or changed word changes it.</summary>
    public static ulong Checksum(ReadOnlySpan<byte> bytes)
    {
        ReadOnlySpan<ulong> words = MemoryMarshal.Cast<byte, ulong>(bytes);
        ReadOnlySpan<Vector<ulong>> vectors = MemoryMarshal.Cast<ulong, Vector<ulong>>(words);
        Vector<ulong> a = Vector<ulong>.One;
        Vector<ulong> b = Vector<ulong>.Zero;
        foreach (Vector<ulong> v in vectors)
        {
            a += v;
            b += a;
        }

        ulong sum = 0;
        for (int l = 0; l < Vector<ulong>.Count; l++)
        {
            sum = (sum * 31) + (a[l] ^ (b[l] * 0x100000001b3UL));
        }

        for (int i = vectors.Length * Vector<ulong>.Count; i < words.Length; i++)
        {
            sum = (sum * 31) + words[i];
        }

        for (int i = words.Length * 8; i < bytes.Length; i++)
        {
            sum = (sum * 31) + bytes[i];
        }

        return sum;
    }
}

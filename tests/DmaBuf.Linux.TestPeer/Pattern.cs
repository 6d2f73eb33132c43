using System.Runtime.InteropServices;

namespace DmaBuf.Linux.TestPeer;

/// <summary>Deterministic buffer content and a checksum, shared by the tests and the peer.</summary>
public static class Pattern
{
    /// <summary>Fills <paramref name="bytes"/> with content that depends on <paramref name="seed"/>.</summary>
    public static void Fill(Span<byte> bytes, ulong seed)
    {
        Span<ulong> words = MemoryMarshal.Cast<byte, ulong>(bytes);
        ulong x = seed * 0x9E3779B97F4A7C15UL + 1;
        for (int i = 0; i < words.Length; i++)
        {
            words[i] = x ^ (ulong)i;
        }

        for (int i = words.Length * 8; i < bytes.Length; i++)
        {
            bytes[i] = (byte)(x >> (i % 8 * 8));
        }
    }

    /// <summary>A position-sensitive checksum (Fletcher-style over 64-bit words).</summary>
    public static ulong Checksum(ReadOnlySpan<byte> bytes)
    {
        ReadOnlySpan<ulong> words = MemoryMarshal.Cast<byte, ulong>(bytes);
        ulong a = 1;
        ulong b = 0;
        foreach (ulong w in words)
        {
            a += w;
            b += a;
        }

        for (int i = words.Length * 8; i < bytes.Length; i++)
        {
            a += bytes[i];
            b += a;
        }

        return a ^ (b * 31);
    }
}

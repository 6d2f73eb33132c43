using System.Numerics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace DmaBuf.Cli;

/// <summary>Frame content that differs per frame, and a position-sensitive checksum to verify it at the consumer.</summary>
/// <remarks>
/// Both passes go around the CPU caches where the CPU can: <see cref="Fill"/> writes with non-temporal stores, as a
/// device's DMA would, and <see cref="Checksum"/> reads with non-temporal prefetches. A 4K frame is 12 MB; filled and
/// checked through the caches, every frame would evict the channel's own state from both CPUs, and each handoff
/// would then time the refill of those caches rather than the handoff (docs/performance-linux.md has both figures).
/// </remarks>
internal static unsafe class ShareFramePattern
{
    private const int PrefetchAhead = 1024; // bytes: sixteen lines ahead of the one being summed

    /// <summary>
    /// Fills <paramref name="bytes"/> with the content of frame number <paramref name="frame"/> and returns its
    /// <see cref="Checksum"/>, computed from the values as they are written (the frame is not read back).
    /// </summary>
    public static ulong Fill(Span<byte> bytes, long frame)
    {
        ulong seed = ((ulong)frame + 1) * 0x9E3779B97F4A7C15UL;
        int lanes = Vector<ulong>.Count;
        Span<ulong> start = stackalloc ulong[lanes];
        for (int l = 0; l < lanes; l++)
        {
            start[l] = seed + (ulong)l;
        }

        var index = new Vector<ulong>(start);
        var step = new Vector<ulong>((ulong)lanes);
        var mix = new Vector<ulong>(0xff51afd7ed558ccdUL);
        Vector<ulong> a = Vector<ulong>.One;
        Vector<ulong> b = Vector<ulong>.Zero;
        int vectorCount = bytes.Length / Vector<byte>.Count;
        fixed (byte* p = bytes)
        {
            var vectors = (Vector<ulong>*)p;
            bool streaming = ((nuint)p % (nuint)Vector<byte>.Count) == 0 &&
                ((Vector<byte>.Count == 32 && Avx.IsSupported) || (Vector<byte>.Count == 16 && Sse2.IsSupported));
            for (int i = 0; i < vectorCount; i++)
            {
                Vector<ulong> v = index * mix;
                if (streaming)
                {
                    StoreNonTemporal(vectors + i, v);
                }
                else
                {
                    vectors[i] = v;
                }

                a += v;
                b += a;
                index += step;
            }

            if (streaming)
            {
                Sse.StoreFence(); // non-temporal stores are weakly ordered: all of them before the frame is handed over
            }
        }

        Span<ulong> words = MemoryMarshal.Cast<byte, ulong>(bytes);
        for (int i = vectorCount * lanes; i < words.Length; i++)
        {
            words[i] = (seed + (ulong)i) * 0xff51afd7ed558ccdUL;
        }

        for (int i = words.Length * 8; i < bytes.Length; i++)
        {
            bytes[i] = (byte)(seed >> (i % 8 * 8));
        }

        return Fold(a, b, bytes, vectorCount);
    }

    /// <summary>Fletcher-style sums per vector lane, folded together; any moved or changed word changes it.</summary>
    public static ulong Checksum(ReadOnlySpan<byte> bytes)
    {
        Vector<ulong> a = Vector<ulong>.One;
        Vector<ulong> b = Vector<ulong>.Zero;
        int vectorCount = bytes.Length / Vector<byte>.Count;
        int perLine = Math.Max(1, 64 / Vector<byte>.Count);
        fixed (byte* p = bytes)
        {
            var vectors = (Vector<ulong>*)p;
            byte* end = p + bytes.Length;
            for (int i = 0; i < vectorCount; i++)
            {
                if (Sse.IsSupported && i % perLine == 0)
                {
                    byte* ahead = (byte*)(vectors + i) + PrefetchAhead;
                    if (ahead < end)
                    {
                        Sse.PrefetchNonTemporal(ahead);
                    }
                }

                Vector<ulong> v = vectors[i];
                a += v;
                b += a;
            }
        }

        return Fold(a, b, bytes, vectorCount);
    }

    private static void StoreNonTemporal(Vector<ulong>* at, Vector<ulong> v)
    {
        if (Vector<byte>.Count == 32)
        {
            Avx.StoreAlignedNonTemporal((ulong*)at, v.AsVector256());
        }
        else
        {
            Sse2.StoreAlignedNonTemporal((ulong*)at, v.AsVector128());
        }
    }

    /// <summary>Folds the lane sums, then the words and bytes past the last whole vector.</summary>
    private static ulong Fold(Vector<ulong> a, Vector<ulong> b, ReadOnlySpan<byte> bytes, int vectorCount)
    {
        ulong sum = 0;
        for (int l = 0; l < Vector<ulong>.Count; l++)
        {
            sum = (sum * 31) + (a[l] ^ (b[l] * 0x100000001b3UL));
        }

        ReadOnlySpan<ulong> words = MemoryMarshal.Cast<byte, ulong>(bytes);
        for (int i = vectorCount * Vector<ulong>.Count; i < words.Length; i++)
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

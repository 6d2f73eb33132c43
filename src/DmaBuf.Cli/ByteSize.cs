using System.Globalization;

namespace DmaBuf.Cli;

/// <summary>Parses sizes such as <c>4096</c>, <c>64K</c>, <c>16M</c>, <c>1G</c> (binary multiples).</summary>
internal static class ByteSize
{
    public static bool TryParse(string text, out long bytes)
    {
        bytes = 0;
        string t = text.Trim().ToUpperInvariant();
        if (t.EndsWith("IB", StringComparison.Ordinal))
        {
            t = t[..^2];
        }
        else if (t.EndsWith('B'))
        {
            t = t[..^1];
        }

        int shift = t.Length > 0 ? t[^1] switch { 'K' => 10, 'M' => 20, 'G' => 30, _ => 0 } : 0;
        if (shift != 0)
        {
            t = t[..^1];
        }

        if (!long.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out long n) || n > (long.MaxValue >> shift))
        {
            return false;
        }

        bytes = n << shift;
        return true;
    }

    /// <summary>A size for people in binary units, as sizes are given: 1.5 GiB, 640 MiB, 12 KiB.</summary>
    public static string Format(long bytes)
    {
        CultureInfo c = CultureInfo.InvariantCulture;
        return bytes switch
        {
            >= 1L << 40 => (bytes / (double)(1L << 40)).ToString("0.# TiB", c),
            >= 1L << 30 => (bytes / (double)(1L << 30)).ToString("0.# GiB", c),
            >= 1L << 20 => (bytes / (double)(1L << 20)).ToString("0 MiB", c),
            >= 1L << 10 => (bytes / (double)(1L << 10)).ToString("0 KiB", c),
            _ => bytes.ToString(c) + " B",
        };
    }
}

/// <summary>What memory this machine can give a run.</summary>
internal static class HostMemory
{
    /// <summary>
    /// The smaller of the runtime's limit (which honours a container's) and what the kernel reports as available
    /// (<c>MemAvailable</c> of <c>/proc/meminfo</c>), plus what this process already holds.
    /// </summary>
    public static long AvailableBytes()
    {
        long limit = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        try
        {
            foreach (string line in File.ReadLines("/proc/meminfo"))
            {
                if (line.StartsWith("MemAvailable:", StringComparison.Ordinal) &&
                    long.TryParse(line.AsSpan(13).Trim().TrimEnd("kB").Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out long kb))
                {
                    long own = Environment.WorkingSet;
                    limit = Math.Min(limit, (kb * 1024) + own);
                    break;
                }
            }
        }
        catch (IOException)
        {
            // No /proc: the runtime's figure stands.
        }

        return limit;
    }
}

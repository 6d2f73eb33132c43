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
}

namespace DmaBuf.Cli;

/// <summary>Exit codes of the <c>dmabuf</c> command (design §6).</summary>
public enum ExitCode
{
    /// <summary>Everything ran and every check passed.</summary>
    Ok = 0,

    /// <summary>A safety check failed: a DMA fault, a stale read, an access to freed memory or a leak.</summary>
    SafetyCheckFailed = 1,

    /// <summary>Bad usage: an unknown option, a value out of range, a profile that does not load.</summary>
    Usage = 2,

    /// <summary>The environment lacks a feature that was asked for.</summary>
    FeatureMissing = 3,
}

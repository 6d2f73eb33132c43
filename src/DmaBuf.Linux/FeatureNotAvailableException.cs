namespace DmaBuf.Linux;

/// <summary>
/// A buffer source that was asked for does not exist on this machine: its device node is absent. The message names the
/// node and what provides it (the kernel configuration option or module).
/// </summary>
public sealed class FeatureNotAvailableException : NotSupportedException
{
    /// <summary>Creates the exception for a missing device node.</summary>
    /// <param name="feature">The feature, e.g. <c>dma-buf heap 'system'</c>.</param>
    /// <param name="deviceNode">The absent node, e.g. <c>/dev/dma_heap/system</c>.</param>
    /// <param name="providedBy">What provides it, e.g. the kernel option.</param>
    public FeatureNotAvailableException(string feature, string deviceNode, string providedBy)
        : base($"{feature} is not available: {deviceNode} does not exist. It is provided by {providedBy}.")
    {
        Feature = feature;
        DeviceNode = deviceNode;
        ProvidedBy = providedBy;
    }

    /// <summary>Creates the exception with a message.</summary>
    public FeatureNotAvailableException(string message)
        : base(message)
    {
        Feature = DeviceNode = ProvidedBy = "";
    }

    /// <summary>Creates the exception with a message and inner exception.</summary>
    public FeatureNotAvailableException(string message, Exception inner)
        : base(message, inner)
    {
        Feature = DeviceNode = ProvidedBy = "";
    }

    /// <summary>Creates the exception with no message.</summary>
    public FeatureNotAvailableException()
    {
        Feature = DeviceNode = ProvidedBy = "";
    }

    /// <summary>The missing feature.</summary>
    public string Feature { get; }

    /// <summary>The device node that does not exist.</summary>
    public string DeviceNode { get; }

    /// <summary>What provides the node: a kernel configuration option or module.</summary>
    public string ProvidedBy { get; }
}

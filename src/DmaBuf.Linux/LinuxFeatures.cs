using System.IO.Compression;

namespace DmaBuf.Linux;

/// <summary>
/// What this machine offers for real buffers: memfd, dma-buf heaps (<c>/dev/dma_heap/*</c>), udmabuf
/// (<c>/dev/udmabuf</c>), DRM cards that export through PRIME (<c>/dev/dri/card*</c>, by driver name) and V4L2 video
/// devices (<c>/dev/video*</c>, by driver name). <see cref="Probe"/> looks; the <c>Require</c> methods turn an absence into a
/// <see cref="FeatureNotAvailableException"/> that names the missing node and the kernel option that provides it.
/// </summary>
public sealed class LinuxFeatures
{
    private readonly Dictionary<string, string>? _kernelConfig;
    private readonly Lazy<IReadOnlyList<KeyValuePair<string, string>>> _videoDevices;

    private LinuxFeatures(
        string deviceRoot, bool hasMemfd, IReadOnlyList<string> heaps, bool hasUdmabuf, IReadOnlyList<KeyValuePair<string, string>> drmCards,
        Lazy<IReadOnlyList<KeyValuePair<string, string>>> videoDevices, Dictionary<string, string>? config)
    {
        DrmCards = drmCards;
        _videoDevices = videoDevices;
        DeviceRoot = deviceRoot;
        HasMemfd = hasMemfd;
        DmaHeaps = heaps;
        HasUdmabuf = hasUdmabuf;
        _kernelConfig = config;
    }

    /// <summary>The directory device nodes were looked for in (<c>/dev</c> unless a test says otherwise).</summary>
    public string DeviceRoot { get; }

    /// <summary>Whether <c>memfd_create</c> works (CONFIG_MEMFD_CREATE).</summary>
    public bool HasMemfd { get; }

    /// <summary>Names of the dma-buf heaps present (entries of <c>/dev/dma_heap</c>), e.g. <c>system</c>.</summary>
    public IReadOnlyList<string> DmaHeaps { get; }

    /// <summary>Whether <c>/dev/udmabuf</c> exists.</summary>
    public bool HasUdmabuf { get; }

    /// <summary>
    /// The DRM card nodes that answered <c>DRM_IOCTL_VERSION</c>, in node order: each node's path and its driver's name
    /// (e.g. <c>/dev/dri/card0</c> and <c>vgem</c>). Nodes this process cannot open are left out.
    /// </summary>
    public IReadOnlyList<KeyValuePair<string, string>> DrmCards { get; }

    /// <summary>
    /// The V4L2 video nodes that answered <c>VIDIOC_QUERYCAP</c>, in node order: each node's path and its driver's name
    /// (e.g. <c>/dev/video0</c> and <c>vivid</c>). One driver usually has several nodes (capture, output, metadata).
    /// Nodes this process cannot open are left out. Asked on first use, not by <see cref="Probe"/>: opening a camera's
    /// node can power it up, so only a caller that wants V4L2 pays for it.
    /// </summary>
    public IReadOnlyList<KeyValuePair<string, string>> VideoDevices => _videoDevices.Value;

    /// <summary>The node of heap <paramref name="heapName"/>.</summary>
    public string DmaHeapNode(string heapName)
    {
        ValidateNodeName(heapName, "dma-buf heap", "dma_heap", "system");
        return Path.Combine(DeviceRoot, "dma_heap", heapName);
    }

    private static void RequireDriverName(string driverName, string kind, string example)
    {
        ArgumentNullException.ThrowIfNull(driverName);
        if (string.IsNullOrWhiteSpace(driverName))
        {
            throw new ArgumentException($"A {kind} driver name is required (the name the driver reports, for example '{example}'); got an empty one.");
        }
    }

    /// <summary>
    /// Refuses a name that is not one file directly under <c>/dev/DIRECTORY</c>: empty, <c>.</c> or <c>..</c>, or with a
    /// slash or a NUL in it, so a name from a user can never reach another file.
    /// </summary>
    internal static void ValidateNodeName(string name, string what, string directory, string example)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (name.Length == 0 || name is "." or ".." || name.Contains('/', StringComparison.Ordinal) || name.Contains('\0', StringComparison.Ordinal))
        {
            throw new ArgumentException(
                $"'{name}' is not a {what} name: it must name one entry of /dev/{directory} (for example '{example}'), without '/'.");
        }
    }

    /// <summary>The udmabuf node.</summary>
    public string UdmabufNode => Path.Combine(DeviceRoot, "udmabuf");

    /// <summary>Looks at this machine.</summary>
    /// <param name="deviceRoot">Where device nodes live; tests point it at an empty directory to see the absent case.</param>
    public static LinuxFeatures Probe(string deviceRoot = "/dev")
    {
        ArgumentNullException.ThrowIfNull(deviceRoot);
        bool memfd;
        try
        {
            using SafeFdHandle fd = Interop.Libc.CreateMemfd("dmabuf-probe", 0);
            memfd = true;
        }
        catch (LinuxErrorException)
        {
            memfd = false;
        }

        string heapDir = Path.Combine(deviceRoot, "dma_heap");
        string[] heaps = Directory.Exists(heapDir)
            ? [.. Directory.EnumerateFileSystemEntries(heapDir).Select(Path.GetFileName).OfType<string>().Order(StringComparer.Ordinal)]
            : [];
        bool udmabuf = File.Exists(Path.Combine(deviceRoot, "udmabuf"));
        return new LinuxFeatures(
            deviceRoot, memfd, heaps, udmabuf, ProbeDrmCards(Path.Combine(deviceRoot, "dri")), new Lazy<IReadOnlyList<KeyValuePair<string, string>>>(() => ProbeVideoDevices(deviceRoot)), ReadKernelConfig());
    }

    /// <summary>Whether heap <paramref name="heapName"/> exists.</summary>
    public bool HasDmaHeap(string heapName) => DmaHeaps.Contains(heapName, StringComparer.Ordinal);

    /// <summary>Whether a DRM card driven by <paramref name="driverName"/> exists.</summary>
    public bool HasDrmDriver(string driverName) => DrmCardNode(driverName) is not null;

    /// <summary>The first card node driven by <paramref name="driverName"/>, or null.</summary>
    public string? DrmCardNode(string driverName) =>
        DrmCards.FirstOrDefault(c => string.Equals(c.Value, driverName, StringComparison.Ordinal)).Key;

    /// <summary>Whether a V4L2 video node driven by <paramref name="driverName"/> exists.</summary>
    public bool HasV4l2Driver(string driverName) => V4l2DeviceNodes(driverName).Any();

    /// <summary>The video nodes driven by <paramref name="driverName"/>, in node order.</summary>
    public IEnumerable<string> V4l2DeviceNodes(string driverName) =>
        VideoDevices.Where(d => string.Equals(d.Value, driverName, StringComparison.Ordinal)).Select(d => d.Key);

    /// <summary>Throws unless memfd works.</summary>
    /// <exception cref="FeatureNotAvailableException">memfd_create is not available.</exception>
    public void RequireMemfd()
    {
        if (!HasMemfd)
        {
            throw new FeatureNotAvailableException(
                "memfd_create is not available: the kernel is built without CONFIG_MEMFD_CREATE or the call is filtered (seccomp).");
        }
    }

    /// <summary>Throws unless heap <paramref name="heapName"/> exists.</summary>
    /// <exception cref="FeatureNotAvailableException">The heap's node is absent.</exception>
    public void RequireDmaHeap(string heapName)
    {
        ValidateNodeName(heapName, "dma-buf heap", "dma_heap", "system");
        if (!HasDmaHeap(heapName))
        {
            string? option = heapName switch
            {
                "system" => "CONFIG_DMABUF_HEAPS_SYSTEM",
                _ when heapName.Contains("cma", StringComparison.Ordinal) || heapName == "reserved" => "CONFIG_DMABUF_HEAPS_CMA",
                _ => null,
            };
            string provider = option is null
                ? $"a dma-buf heap driver that registers a heap named '{heapName}' (the heaps need CONFIG_DMABUF_HEAPS{ConfigNote("CONFIG_DMABUF_HEAPS")})"
                : $"the kernel options CONFIG_DMABUF_HEAPS{ConfigNote("CONFIG_DMABUF_HEAPS")} and {option}{ConfigNote(option)}";
            string present = DmaHeaps.Count == 0 ? "no heaps are present" : "present heaps: " + string.Join(", ", DmaHeaps);
            throw new FeatureNotAvailableException($"dma-buf heap '{heapName}' ({present})", DmaHeapNode(heapName), provider);
        }
    }

    /// <summary>Throws unless <c>/dev/udmabuf</c> exists.</summary>
    /// <exception cref="FeatureNotAvailableException">The node is absent.</exception>
    public void RequireUdmabuf()
    {
        if (!HasUdmabuf)
        {
            throw new FeatureNotAvailableException(
                "udmabuf", UdmabufNode, $"the kernel option CONFIG_UDMABUF{ConfigNote("CONFIG_UDMABUF")} (module udmabuf)");
        }
    }

    /// <summary>Throws unless a DRM card driven by <paramref name="driverName"/> exists; returns its node.</summary>
    /// <exception cref="FeatureNotAvailableException">No card answers with that driver name.</exception>
    public string RequireDrmDriver(string driverName)
    {
        RequireDriverName(driverName, "DRM", "vgem");
        return DrmCardNode(driverName) ?? throw DriverMissing(
            "DRM driver", "DRM cards", driverName, DrmCards, Path.Combine(DeviceRoot, "dri", "card*"),
            ("vgem", "CONFIG_DRM_VGEM"), ("DRM", "CONFIG_DRM"));
    }

    /// <summary>Throws unless a V4L2 video node driven by <paramref name="driverName"/> exists; returns the first one.</summary>
    /// <exception cref="FeatureNotAvailableException">No video node answers with that driver name.</exception>
    public string RequireV4l2Driver(string driverName)
    {
        RequireDriverName(driverName, "V4L2", "vivid");
        return V4l2DeviceNodes(driverName).FirstOrDefault() ?? throw DriverMissing(
            "V4L2 driver", "video devices", driverName, VideoDevices, Path.Combine(DeviceRoot, "video*"),
            ("vivid", "CONFIG_VIDEO_VIVID"), ("V4L2", "CONFIG_VIDEO_DEV"));
    }

    /// <inheritdoc/>
    public override string ToString() =>
        $"memfd: {(HasMemfd ? "yes" : "no")}; dma-buf heaps: {(DmaHeaps.Count == 0 ? "none" : string.Join(", ", DmaHeaps))}; " +
        $"udmabuf: {(HasUdmabuf ? "yes" : "no")}; DRM cards: " +
        (DrmCards.Count == 0 ? "none" : string.Join(", ", DrmCards.Select(c => $"{Path.GetFileName(c.Key)} ({c.Value})"))) + "; video devices: " +
        (VideoDevices.Count == 0 ? "none" : string.Join(", ", VideoDevices.Select(d => $"{Path.GetFileName(d.Key)} ({d.Value})")));

    /// <summary>
    /// The error for a device driver with no node here: which nodes are present and what provides the driver — the
    /// module and its kernel option for the test driver we know (<paramref name="known"/>), the subsystem's core option
    /// otherwise.
    /// </summary>
    private FeatureNotAvailableException DriverMissing(
        string what, string nodesName, string driverName, IReadOnlyList<KeyValuePair<string, string>> nodes, string pattern,
        (string Module, string Option) known, (string Subsystem, string Option) core)
    {
        string provider = driverName == known.Module
            ? $"the {known.Module} module (modprobe {known.Module}; the kernel option {known.Option}{ConfigNote(known.Option)})"
            : $"a {core.Subsystem} driver named '{driverName}' (the {core.Subsystem} core needs {core.Option}{ConfigNote(core.Option)})";
        string present = nodes.Count == 0
            ? $"no {nodesName} are present"
            : $"present {nodesName}: " + string.Join(", ", nodes.Select(n => $"{n.Key} ({n.Value})"));
        return new FeatureNotAvailableException($"{what} '{driverName}' ({present})", pattern, provider);
    }

    /// <summary>Asks every <c>card*</c> node under <paramref name="driDir"/> for its driver's name.</summary>
    private static List<KeyValuePair<string, string>> ProbeDrmCards(string driDir)
    {
        var cards = new List<KeyValuePair<string, string>>();
        if (!Directory.Exists(driDir))
        {
            return cards;
        }

        foreach (string node in Directory.EnumerateFileSystemEntries(driDir, "card*").Order(StringComparer.Ordinal))
        {
            try
            {
                using SafeFdHandle card = Interop.Libc.OpenReadWrite(node);
                cards.Add(new(node, Interop.Libc.DrmDriverName(card)));
            }
            catch (LinuxErrorException)
            {
                // not openable by this process, or not a DRM node (ENOTTY): not a card we can use
            }
        }

        return cards;
    }

    /// <summary>Asks every <c>video*</c> node under <paramref name="deviceRoot"/> for its driver's name.</summary>
    private static List<KeyValuePair<string, string>> ProbeVideoDevices(string deviceRoot)
    {
        var devices = new List<KeyValuePair<string, string>>();
        if (!Directory.Exists(deviceRoot))
        {
            return devices;
        }

        // video10 sorts after video9: order by the number, not the text
        IEnumerable<string> nodes = Directory.EnumerateFileSystemEntries(deviceRoot, "video*")
            .Select(n => (Node: n, Number: int.TryParse(Path.GetFileName(n).AsSpan(5), out int k) ? k : int.MaxValue))
            .OrderBy(n => n.Number).ThenBy(n => n.Node, StringComparer.Ordinal).Select(n => n.Node);
        foreach (string node in nodes)
        {
            try
            {
                using SafeFdHandle video = Interop.Libc.OpenReadWrite(node);
                devices.Add(new(node, Interop.Libc.V4l2DriverName(video, node)));
            }
            catch (LinuxErrorException)
            {
                // not openable by this process, or not a V4L2 node (ENOTTY): not a device we can use
            }
        }

        return devices;
    }

    private string ConfigNote(string option)
    {
        if (_kernelConfig is null)
        {
            return "";
        }

        return _kernelConfig.TryGetValue(option, out string? value) ? $" (this kernel: {option}={value})" : " (this kernel: not set)";
    }

    /// <summary>The running kernel's configuration from <c>/proc/config.gz</c>, when the kernel exposes it.</summary>
    private static Dictionary<string, string>? ReadKernelConfig()
    {
        try
        {
            using var file = new FileStream("/proc/config.gz", FileMode.Open, FileAccess.Read);
            using var gzip = new GZipStream(file, CompressionMode.Decompress);
            using var reader = new StreamReader(gzip);
            var config = new Dictionary<string, string>(StringComparer.Ordinal);
            while (reader.ReadLine() is { } line)
            {
                int eq = line.IndexOf('=', StringComparison.Ordinal);
                if (line.StartsWith("CONFIG_", StringComparison.Ordinal) && eq > 0)
                {
                    config[line[..eq]] = line[(eq + 1)..];
                }
            }

            return config;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException)
        {
            return null;
        }
    }
}

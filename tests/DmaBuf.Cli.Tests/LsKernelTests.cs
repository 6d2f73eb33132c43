using System.Text.Json;
using DmaBuf.Linux;
using DmaBuf.Linux.V4l2;
using DmaBuf.Testing;

namespace DmaBuf.Cli.Tests;

/// <summary>
/// <c>dmabuf ls</c> against the real /proc of a kernel that exports dma-bufs: the vgem buffers this test makes with the
/// library's own DRM PRIME exporter, named with <c>DMA_BUF_SET_NAME</c>, must be listed with their names, sizes, inodes
/// and this process as their holder.
/// </summary>
[Trait(KernelRequirement.Trait, "vgem")]
[Collection(DescriptorCollection.Name)]
public sealed class LsKernelTests : IDisposable
{
    private readonly DrmPrimeExporter _exporter = KernelRequirement.Vgem();

    public void Dispose() => _exporter.Dispose();

    private static (int Code, string Out, string Err) Run(params string[] args) => Cli.Run(args);

    /// <summary>The listed buffers, by inode.</summary>
    private static Dictionary<ulong, JsonElement> ListJson()
    {
        (int code, string output, string err) = Run("ls", "--json");
        Assert.True(code == 0, $"dmabuf ls --json exited {code}: {err}");
        using JsonDocument doc = JsonDocument.Parse(output);
        return doc.RootElement.GetProperty("buffers").EnumerateArray()
            .ToDictionary(b => b.GetProperty("inode").GetUInt64(), b => b.Clone());
    }

    /// <summary>The inode behind descriptor <paramref name="fd"/> of this process (the <c>ino:</c> line of its fdinfo).</summary>
    private static ulong InodeOf(int fd) =>
        File.ReadLines($"/proc/self/fdinfo/{fd}")
            .Where(l => l.StartsWith("ino:", StringComparison.Ordinal))
            .Select(l => ulong.Parse(l["ino:".Length..].Trim(), System.Globalization.CultureInfo.InvariantCulture))
            .Single();

    [Fact]
    public void Json_ListsTheBuffersWeHold_WithTheirNamesSizesAndUsAsHolder()
    {
        string[] names = ["ls-frame-0", "ls-frame-1", "ls-frame-2"];
        long[] sizes = [64 * 1024, 128 * 1024, 1024 * 1024];
        var buffers = names.Select((n, i) => _exporter.Allocate(sizes[i], n)).ToList();
        try
        {
            Dictionary<ulong, JsonElement> listed = ListJson();

            for (int i = 0; i < buffers.Count; i++)
            {
                LinuxBuffer linux = buffers[i].Buffer.GetLinuxBuffer();
                Assert.True(listed.TryGetValue(linux.Identity.Inode, out JsonElement b),
                    $"buffer '{names[i]}' (inode {linux.Identity.Inode}) is not listed; listed: {string.Join(", ", listed.Keys)}");
                Assert.Equal(names[i], b.GetProperty("name").GetString());
                Assert.Equal(buffers[i].Buffer.Size, b.GetProperty("size").GetInt64());
                Assert.Equal(sizes[i], b.GetProperty("size").GetInt64());
                Assert.False(string.IsNullOrEmpty(b.GetProperty("exporter").GetString()));
                Assert.True(b.GetProperty("count").GetInt64() >= 1);
                JsonElement holder = Assert.Single(b.GetProperty("holders").EnumerateArray());
                Assert.Equal(Environment.ProcessId, holder.GetProperty("pid").GetInt32());
                Assert.Equal(linux.Identity.Inode, InodeOf(holder.GetProperty("fd").GetInt32())); // that fd is this buffer
            }
        }
        finally
        {
            buffers.ForEach(b => b.Dispose());
        }

        Dictionary<ulong, JsonElement> after = ListJson();
        Assert.DoesNotContain(after.Values, b => names.Contains(b.GetProperty("name").GetString()));
    }

    [Fact]
    public void Json_ShowsANameSetAfterExport_AndTheTableNamesTheBufferAndItsHolder()
    {
        using DmaBufHandle buffer = _exporter.Allocate(256 * 1024);
        ulong inode = buffer.Buffer.GetLinuxBuffer().Identity.Inode;
        Assert.Equal(JsonValueKind.Null, ListJson()[inode].GetProperty("name").ValueKind);

        buffer.SetName("renamed-frame");
        (int code, string table, _) = Run("ls");

        Assert.Equal("renamed-frame", ListJson()[inode].GetProperty("name").GetString());
        Assert.Equal(0, code);
        Assert.Contains("renamed-frame", table, StringComparison.Ordinal);
        Assert.Contains($"[{Environment.ProcessId}]:", table, StringComparison.Ordinal);
    }

    /// <summary>
    /// debugfs <c>dma_buf/bufinfo</c> lists, under each buffer, the devices attached to it (drivers/dma-buf/dma-buf.c,
    /// the debugfs show function: one <c>dev_name()</c> per attachment). A system-heap buffer of ours that vgem imports
    /// through PRIME is attached to vgem's device (<c>drm_gem_prime_import</c> calls <c>dma_buf_attach</c> for it), so
    /// <c>dmabuf ls --json</c> must show that device while the GEM handle lives, and none before or after.
    /// </summary>
    [Fact]
    [Trait(KernelRequirement.Trait, "dma-heap")]
    public void Json_WithDebugfs_ShowsVgemAttachedToOurHeapBuffer_WhileItHoldsTheImport()
    {
        LinuxFeatures features = KernelRequirement.Require(f => f.RequireDmaHeap("system"));
        string card = features.RequireDrmDriver("vgem");
        RequireBufInfo();
        string device = SysfsDeviceName(card);
        using var heap = new DmaHeapExporter("system", features: features);
        using DmaBufHandle buffer = heap.Allocate(256 * 1024, "ls-attached");
        LinuxBuffer linux = buffer.Buffer.GetLinuxBuffer();
        Assert.Empty(AttachedDevices(linux.Identity.Inode));

        using (DrmPrimeExporter vgem = KernelRequirement.Vgem())
        {
            using var fd = new SafeFdHandle(DescriptorOf(linux.Identity.Inode), ownsHandle: false); // the heap buffer's own
            vgem.ImportHandle(fd); // the GEM object vgem makes holds an attachment until the card closes
            string[] attached = AttachedDevices(linux.Identity.Inode);
            Assert.Equal([device], attached);
            Assert.Equal("vgem", device); // vgem registers its platform device as "vgem"
            (int code, string table, _) = Run("ls");
            Assert.Equal(0, code);
            Assert.Contains(device, table, StringComparison.Ordinal);
        }

        Assert.Empty(AttachedDevices(linux.Identity.Inode)); // closing the card dropped the GEM object and its attachment
    }

    /// <summary>
    /// A system-heap buffer of ours queued to vivid (<c>V4L2_MEMORY_DMABUF</c>) and filled by it lists no attached
    /// device: vivid's queues use videobuf2's vmalloc allocator by default, whose dma-buf import keeps the dma-buf and
    /// maps it into the kernel (<c>dma_buf_vmap</c>) without calling <c>dma_buf_attach</c>, so the kernel has no
    /// attachment to show. This is what bufinfo really says, not a gap in <c>dmabuf ls</c>: the vgem case above shows
    /// the same reading does list a device that attached.
    /// </summary>
    [Fact]
    [Trait(KernelRequirement.Trait, "dma-heap")]
    [Trait(KernelRequirement.Trait, "vivid")]
    public void Json_WithDebugfs_AHeapBufferVividCapturesInto_HasNoAttachment_VividMapsWithoutAttaching()
    {
        LinuxFeatures features = KernelRequirement.Require(f => f.RequireDmaHeap("system"));
        features.RequireV4l2Driver("vivid");
        RequireBufInfo();
        using var heap = new DmaHeapExporter("system", features: features);
        using V4l2Device device = V4l2Device.FindCapture("vivid", features, new ImportCache(new MmapCache()));
        V4l2PixFormat format = device.SetFormat(new V4l2PixFormat(640, 360, V4l2FourCC.Yuyv));
        using DmaBufHandle buffer = heap.Allocate(format.SizeImage, "ls-vivid");
        ulong inode = buffer.Buffer.GetLinuxBuffer().Identity.Inode;
        device.RequestBuffers(1, V4l2Memory.DmaBuf);
        device.QueueDmaBuf(0, buffer);
        device.StreamOn();
        using (V4l2Buffer frame = device.Dequeue(TimeSpan.FromSeconds(10)))
        {
            Assert.Same(buffer.Buffer, frame.DmaBuf?.Buffer); // vivid did use our buffer
            device.QueueDmaBuf(0, frame.DmaBuf!); // and holds it again, streaming
        }

        Assert.Equal([], AttachedDevices(inode));
        device.StreamOff();
    }

    private static void RequireBufInfo()
    {
        try
        {
            using FileStream _ = File.OpenRead(ProcDmaBufScanner.BufInfoPath);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Assert.Skip(KernelRequirement.SkipReason(
                $"{ProcDmaBufScanner.BufInfoPath} cannot be read ({e.Message}): debugfs is not mounted, or this process is not root."));
        }
    }

    /// <summary>This process's descriptor of the dma-buf with <paramref name="inode"/> (from /proc/self/fdinfo).</summary>
    private static int DescriptorOf(ulong inode) =>
        Directory.GetFiles("/proc/self/fdinfo")
            .Select(p => int.Parse(Path.GetFileName(p), System.Globalization.CultureInfo.InvariantCulture))
            .First(fd => File.Exists($"/proc/self/fdinfo/{fd}")
                && File.ReadLines($"/proc/self/fdinfo/{fd}").Any(l => l.StartsWith("exp_name:", StringComparison.Ordinal))
                && InodeOf(fd) == inode);

    /// <summary>The kernel's name of the device behind DRM node <paramref name="card"/> (/sys/class/drm/cardN/device).</summary>
    private static string SysfsDeviceName(string card)
    {
        string link = $"/sys/class/drm/{Path.GetFileName(card)}/device";
        return Path.GetFileName(new DirectoryInfo(link).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? link);
    }

    /// <summary>The <c>attachedDevices</c> that <c>dmabuf ls --json</c> gives the buffer with <paramref name="inode"/>.</summary>
    private static string[] AttachedDevices(ulong inode)
    {
        Dictionary<ulong, JsonElement> listed = ListJson();
        Assert.True(listed.TryGetValue(inode, out JsonElement b), $"inode {inode} is not listed");
        JsonElement devices = b.GetProperty("attachedDevices");
        Assert.True(devices.ValueKind == JsonValueKind.Array, $"attachedDevices is {devices.ValueKind}: bufinfo was not read");
        return [.. devices.EnumerateArray().Select(d => d.GetString()!)];
    }
}

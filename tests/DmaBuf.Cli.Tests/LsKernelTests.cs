using System.Text.Json;
using DmaBuf.Linux;
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
}

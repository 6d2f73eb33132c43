using System.Text.Json;

namespace DmaBuf.Cli.Tests;

/// <summary><c>dmabuf ls</c> against a synthetic /proc tree: fd links and fdinfo files as the kernel writes them.</summary>
public sealed class LsCommandTests : IDisposable
{
    private readonly string _proc = Directory.CreateTempSubdirectory("dmabuf-ls-").FullName;

    public void Dispose() => Directory.Delete(_proc, recursive: true);

    private void AddProcess(int pid, string comm)
    {
        Directory.CreateDirectory(Path.Combine(_proc, pid.ToString(), "fd"));
        Directory.CreateDirectory(Path.Combine(_proc, pid.ToString(), "fdinfo"));
        File.WriteAllText(Path.Combine(_proc, pid.ToString(), "comm"), comm + "\n");
    }

    private void AddFd(int pid, int fd, string link, string? fdinfo)
    {
        File.CreateSymbolicLink(Path.Combine(_proc, pid.ToString(), "fd", fd.ToString()), link);
        if (fdinfo is not null)
        {
            File.WriteAllText(Path.Combine(_proc, pid.ToString(), "fdinfo", fd.ToString()), fdinfo);
        }
    }

    private void AddDmaBuf(int pid, int fd, ulong inode, long size, string exporter, string? name, long count) =>
        AddFd(pid, fd, "/dmabuf:" + (name ?? ""),
            $"pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t{inode}\nsize:\t{size}\ncount:\t{count}\nexp_name:\t{exporter}\n" +
            (name is null ? "" : $"name:\t{name}\n"));

    /// <summary>The synthetic debugfs bufinfo; absent unless a test writes it (debugfs not mounted).</summary>
    private string BufInfo => Path.Combine(_proc, "bufinfo");

    /// <summary>Maps lines as the kernel writes them: a dma-buf mapping shows the buffer's inode and /dmabuf:NAME.</summary>
    private void AddMaps(int pid, params string[] lines) =>
        File.WriteAllText(Path.Combine(_proc, pid.ToString(), "maps"), string.Join('\n', lines) + "\n");

    [Fact]
    public void Json_ABufferHeldOnlyThroughAMapping_IsListedWithTheNameTheKernelShows()
    {
        AddProcess(300, "viewer");
        AddMaps(300,
            "55d0c0a00000-55d0c0a21000 r--p 00000000 08:01 131 /usr/bin/viewer",
            "7f1000000000-7f1000010000 rw-s 00000000 00:0f 5151                       /dmabuf:frame-7",
            "7f1000010000-7f1000018000 rw-s 100010000 00:0f 5151                      /dmabuf:frame-7",
            "7f2000000000-7f2000001000 rw-s 00000000 00:01 77                         /memfd:not-a-dma-buf (deleted)");

        using JsonDocument doc = RunJson();

        JsonElement buffer = Assert.Single(doc.RootElement.GetProperty("buffers").EnumerateArray());
        Assert.Equal(5151UL, buffer.GetProperty("inode").GetUInt64());
        Assert.Equal("frame-7", buffer.GetProperty("name").GetString());
        Assert.Equal(0x18000, buffer.GetProperty("size").GetInt64()); // what is mapped (not the fake offset): no fdinfo, no debugfs
        Assert.Equal("?", buffer.GetProperty("exporter").GetString());
        Assert.Empty(buffer.GetProperty("holders").EnumerateArray());
        JsonElement mapping = Assert.Single(buffer.GetProperty("mappings").EnumerateArray());
        Assert.Equal((300, "viewer", 0x18000L),
            (mapping.GetProperty("pid").GetInt32(), mapping.GetProperty("comm").GetString()!, mapping.GetProperty("bytes").GetInt64()));
        Assert.Equal(JsonValueKind.Null, buffer.GetProperty("attachedDevices").ValueKind); // debugfs not readable
    }

    [Fact]
    public void Json_HeldAndMapped_IsOneBufferWithItsHolderAndItsMapping()
    {
        AddProcess(100, "decoder");
        AddDmaBuf(100, 7, inode: 4242, size: 8192, "system", "frame-0", count: 1);
        AddMaps(100, "7f1000000000-7f1000002000 rw-s 00000000 00:0f 4242 /dmabuf:frame-0");

        using JsonDocument doc = RunJson();

        JsonElement buffer = Assert.Single(doc.RootElement.GetProperty("buffers").EnumerateArray());
        Assert.Equal("system", buffer.GetProperty("exporter").GetString());
        Assert.Equal(7, Assert.Single(buffer.GetProperty("holders").EnumerateArray()).GetProperty("fd").GetInt32());
        Assert.Equal(8192, Assert.Single(buffer.GetProperty("mappings").EnumerateArray()).GetProperty("bytes").GetInt64());
    }

    [Fact]
    public void Json_Bufinfo_GivesAttachedDevices_AndDescribesAMappedOnlyBuffer()
    {
        AddProcess(100, "decoder");
        AddProcess(300, "viewer");
        AddDmaBuf(100, 7, inode: 4242, size: 8192, "system", "frame-0", count: 1);
        AddMaps(300, "7f1000000000-7f1000001000 rw-s 00000000 00:0f 5151 /dmabuf:frame-7");
        File.WriteAllText(BufInfo, string.Join('\n',
            "",
            "Dma-buf Objects:",
            "size    \tflags   \tmode    \tcount   \texp_name\tino     \tname",
            "00008192\t00000002\t00080007\t00000002\tsystem\t00004242\tframe-0",
            "\twrite fence:vgem 3 seq 1 signalled",
            "\tAttached Devices:",
            "\tvgem",
            "\tvivid-000-vid-cap",
            "Total 2 devices attached",
            "",
            "00065536\t00000002\t00080007\t00000001\tdrm\t00005151\tframe-7",
            "\tAttached Devices:",
            "Total 0 devices attached",
            "",
            "",
            "Total 2 objects, 73728 bytes",
            ""));

        using JsonDocument doc = RunJson();

        JsonElement[] buffers = [.. doc.RootElement.GetProperty("buffers").EnumerateArray()];
        JsonElement mappedOnly = buffers.Single(b => b.GetProperty("inode").GetUInt64() == 5151);
        JsonElement held = buffers.Single(b => b.GetProperty("inode").GetUInt64() == 4242);
        Assert.Equal(["vgem", "vivid-000-vid-cap"], held.GetProperty("attachedDevices").EnumerateArray().Select(d => d.GetString()!));
        Assert.Empty(mappedOnly.GetProperty("attachedDevices").EnumerateArray());
        Assert.Equal(65536, mappedOnly.GetProperty("size").GetInt64()); // debugfs knows the whole buffer, not just the mapped page
        Assert.Equal("drm", mappedOnly.GetProperty("exporter").GetString());
        Assert.Equal(1, mappedOnly.GetProperty("count").GetInt64());
    }

    private (int Code, string Out, string Err) Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = DmaBufCommand.Run([.. args, "--proc-root", _proc, "--bufinfo", BufInfo], stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    private JsonDocument RunJson()
    {
        (int code, string output, string err) = Run("ls", "--json");
        Assert.True(code == 0, err);
        return JsonDocument.Parse(output);
    }

    [Fact]
    public void Json_SameInodeInTwoProcesses_IsOneBufferWithBothHolders()
    {
        AddProcess(100, "decoder");
        AddProcess(200, "compositor");
        AddDmaBuf(100, 7, inode: 4242, size: 3_110_400, "system", "frame-0", count: 2);
        AddDmaBuf(200, 12, inode: 4242, size: 3_110_400, "system", "frame-0", count: 2);
        AddDmaBuf(200, 13, inode: 4243, size: 8192, "drm", null, count: 1);

        using JsonDocument doc = RunJson();

        JsonElement[] buffers = [.. doc.RootElement.GetProperty("buffers").EnumerateArray()];
        Assert.Equal(2, buffers.Length);
        JsonElement frame = buffers[0];
        Assert.Equal(4242UL, frame.GetProperty("inode").GetUInt64());
        Assert.Equal(3_110_400, frame.GetProperty("size").GetInt64());
        Assert.Equal("system", frame.GetProperty("exporter").GetString());
        Assert.Equal("frame-0", frame.GetProperty("name").GetString());
        Assert.Equal(2, frame.GetProperty("count").GetInt64());
        JsonElement[] holders = [.. frame.GetProperty("holders").EnumerateArray()];
        Assert.Equal([(100, "decoder", 7), (200, "compositor", 12)],
            holders.Select(h => (h.GetProperty("pid").GetInt32(), h.GetProperty("comm").GetString()!, h.GetProperty("fd").GetInt32())));
        Assert.Equal(JsonValueKind.Null, buffers[1].GetProperty("name").ValueKind);
        Assert.Equal(3_110_400 + 8192, doc.RootElement.GetProperty("totalBytes").GetInt64());
    }

    [Fact]
    public void Json_SameNameAndSizeButOtherInode_AreTwoBuffers()
    {
        AddProcess(100, "app");
        AddDmaBuf(100, 3, inode: 1, size: 4096, "system", "same", count: 1);
        AddDmaBuf(100, 4, inode: 2, size: 4096, "system", "same", count: 1);

        using JsonDocument doc = RunJson();

        Assert.Equal([1UL, 2UL], doc.RootElement.GetProperty("buffers").EnumerateArray().Select(b => b.GetProperty("inode").GetUInt64()));
    }

    [Fact]
    public void Json_OtherFdsAndNonProcessEntries_AreIgnored()
    {
        AddProcess(100, "app");
        AddFd(100, 0, "/dev/null", "pos:\t0\nflags:\t02\nmnt_id:\t5\nino:\t5\n");
        AddFd(100, 1, "anon_inode:[eventfd]", "pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t9\neventfd-count:\t0\n");
        AddFd(100, 2, "anon_inode:dmabuf", "pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t77\nsize:\t65536\ncount:\t1\nexp_name:\tion\n");
        Directory.CreateDirectory(Path.Combine(_proc, "self"));
        File.WriteAllText(Path.Combine(_proc, "meminfo"), "MemTotal: 1 kB\n");

        using JsonDocument doc = RunJson();

        JsonElement only = Assert.Single(doc.RootElement.GetProperty("buffers").EnumerateArray());
        Assert.Equal(77UL, only.GetProperty("inode").GetUInt64());
        Assert.Equal("ion", only.GetProperty("exporter").GetString());
    }

    [Fact]
    public void Json_ProcessThatVanishedMidWalk_IsSkipped()
    {
        AddProcess(100, "alive");
        AddDmaBuf(100, 5, inode: 10, size: 4096, "system", "kept", count: 1);
        // 300: the fd is still listed but its fdinfo is gone (closed, or the process exited).
        AddProcess(300, "exiting");
        AddFd(300, 5, "/dmabuf:gone", fdinfo: null);
        // 400: only the pid directory is left.
        Directory.CreateDirectory(Path.Combine(_proc, "400"));

        using JsonDocument doc = RunJson();

        JsonElement only = Assert.Single(doc.RootElement.GetProperty("buffers").EnumerateArray());
        Assert.Equal("kept", only.GetProperty("name").GetString());
        Assert.Equal(100, Assert.Single(only.GetProperty("holders").EnumerateArray()).GetProperty("pid").GetInt32());
    }

    [Fact]
    public void Table_NoDmaBufs_SaysSoAndSucceeds()
    {
        AddProcess(100, "app");
        AddFd(100, 0, "/dev/null", "pos:\t0\n");

        (int code, string output, _) = Run("ls");

        Assert.Equal(0, code);
        Assert.Contains("No dma-bufs", output, StringComparison.Ordinal);
    }

    [Fact]
    public void Json_NoDmaBufs_IsAnEmptyDocument()
    {
        using JsonDocument doc = RunJson();

        Assert.Equal(0, doc.RootElement.GetProperty("buffers").GetArrayLength());
        Assert.Equal(0, doc.RootElement.GetProperty("totalBytes").GetInt64());
        Assert.Equal(["buffers", "totalBytes"], doc.RootElement.EnumerateObject().Select(p => p.Name));
    }

    [Fact]
    public void Table_ListsNameExporterAndHolders()
    {
        AddProcess(100, "decoder");
        AddDmaBuf(100, 9, inode: 55, size: 2 << 20, "system", "frame-9", count: 1);

        (int code, string output, _) = Run("ls");

        Assert.Equal(0, code);
        Assert.Contains("frame-9", output, StringComparison.Ordinal);
        Assert.Contains("decoder[100]:9", output, StringComparison.Ordinal);
        Assert.Contains("2.0 MiB", output, StringComparison.Ordinal);
    }

    [Fact]
    public void Json_RealProc_HasTheDocumentedShape()
    {
        var stdout = new StringWriter();
        int code = DmaBufCommand.Run(["ls", "--json"], stdout, new StringWriter());

        Assert.Equal(0, code);
        using JsonDocument doc = JsonDocument.Parse(stdout.ToString());
        Assert.Equal(JsonValueKind.Array, doc.RootElement.GetProperty("buffers").ValueKind);
        foreach (JsonElement b in doc.RootElement.GetProperty("buffers").EnumerateArray())
        {
            foreach (string f in new[] { "inode", "size", "exporter", "name", "count", "holders" })
            {
                Assert.True(b.TryGetProperty(f, out _), f);
            }
        }
    }
}

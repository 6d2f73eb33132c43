using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;

namespace DmaBuf.Cli;

/// <summary>One process's hold on a dma-buf: an open file descriptor.</summary>
internal sealed record LsHolder(int Pid, string Comm, int Fd);

/// <summary>One process's hold on a dma-buf through a mapping: its lines of <c>/proc/[pid]/maps</c>, in bytes.</summary>
internal sealed record LsMapping(int Pid, string Comm, long Bytes);

/// <summary>
/// One dma-buf, identified by its inode, with every process that holds an fd of it and every process that maps it.
/// <see cref="AttachedDevices"/> comes from debugfs <c>dma_buf/bufinfo</c> and is null where that is not readable.
/// </summary>
internal sealed record LsBuffer(ulong Inode, long Size, string Exporter, string? Name, long Count, IReadOnlyList<LsHolder> Holders)
{
    public IReadOnlyList<LsMapping> Mappings { get; init; } = [];

    public IReadOnlyList<string>? AttachedDevices { get; init; }
}

/// <summary>The document <c>dmabuf ls --json</c> prints.</summary>
internal sealed record LsReport(IReadOnlyList<LsBuffer> Buffers, long TotalBytes);

/// <summary>
/// Finds every dma-buf held through a file descriptor by walking <c>/proc/[pid]/fd</c> and <c>/proc/[pid]/fdinfo</c>,
/// the way Android's <c>dmabuf_dump</c> does, and every dma-buf mapped by a process (<c>/proc/[pid]/maps</c>), also
/// one whose fd is closed; where debugfs is readable, <c>dma_buf/bufinfo</c> adds the devices attached to each buffer
/// and the size, exporter and count of buffers seen only through a mapping.
/// </summary>
/// <remarks>
/// A dma-buf fd links to <c>/dmabuf:NAME</c> (or <c>anon_inode:dmabuf</c> on old kernels); its fdinfo carries the
/// exporter's lines <c>size:</c>, <c>count:</c>, <c>exp_name:</c> and, once named, <c>name:</c>, after the generic
/// <c>ino:</c> line. Buffers are grouped by inode, never by fd number or name (rule 6): two processes' fds of one
/// buffer are one buffer. Processes and fds that vanish or refuse access while the walk runs are skipped.
/// </remarks>
internal static partial class ProcDmaBufScanner
{
    /// <summary>The debugfs file that lists every dma-buf with its attachments.</summary>
    public const string BufInfoPath = "/sys/kernel/debug/dma_buf/bufinfo";

    /// <summary>
    /// Walks <paramref name="procRoot"/> (normally <c>/proc</c>) and reads <paramref name="bufInfo"/> (normally
    /// <see cref="BufInfoPath"/>; skipped when absent or not readable) and returns the buffers found, largest first.
    /// </summary>
    public static LsReport Scan(string procRoot, string bufInfo = BufInfoPath)
    {
        var byInode = new Dictionary<ulong, (FdInfo Info, List<LsHolder> Holders)>();
        var mapped = new Dictionary<ulong, (string? Name, long Extent, Dictionary<int, LsMapping> ByPid)>();
        foreach (string pidDir in SafeEnumerate(procRoot))
        {
            if (!int.TryParse(Path.GetFileName(pidDir), NumberStyles.None, CultureInfo.InvariantCulture, out int pid))
            {
                continue;
            }

            string? comm = null;
            foreach (MapsLine m in ReadMaps(pidDir))
            {
                comm ??= ReadComm(pidDir);
                if (comm is null)
                {
                    break;
                }

                if (!mapped.TryGetValue(m.Inode, out var entry))
                {
                    entry = (m.Name, 0, []);
                }

                LsMapping so = entry.ByPid.TryGetValue(pid, out LsMapping? before) ? before : new LsMapping(pid, comm, 0);
                entry.ByPid[pid] = so with { Bytes = so.Bytes + m.Bytes };
                // The size when nothing else tells it: the most one process maps (a mapping's file offset is no guide:
                // DRM PRIME maps at a fake offset of 4 GiB and more).
                mapped[m.Inode] = (entry.Name, Math.Max(entry.Extent, so.Bytes + m.Bytes), entry.ByPid);
            }

            foreach (string fdPath in SafeEnumerate(Path.Combine(pidDir, "fd")))
            {
                if (!int.TryParse(Path.GetFileName(fdPath), NumberStyles.None, CultureInfo.InvariantCulture, out int fd) ||
                    !IsDmaBufLink(fdPath))
                {
                    continue;
                }

                FdInfo? info = ReadFdInfo(Path.Combine(pidDir, "fdinfo", Path.GetFileName(fdPath)), fdPath);
                if (info is null)
                {
                    continue;
                }

                comm ??= ReadComm(pidDir);
                if (comm is null)
                {
                    break; // the process is gone
                }

                if (!byInode.TryGetValue(info.Inode, out (FdInfo Info, List<LsHolder> Holders) entry))
                {
                    entry = (info, []);
                    byInode.Add(info.Inode, entry);
                }

                entry.Holders.Add(new LsHolder(pid, comm, fd));
            }
        }

        Dictionary<ulong, BufInfoEntry>? debugfs = ReadBufInfo(bufInfo);
        var buffers = new List<LsBuffer>();
        foreach ((ulong inode, (FdInfo info, List<LsHolder> holders)) in byInode)
        {
            buffers.Add(new LsBuffer(inode, info.Size, info.Exporter, info.Name, info.Count, [.. holders.OrderBy(h => h.Pid).ThenBy(h => h.Fd)])
            {
                Mappings = MappingsOf(mapped, inode),
                AttachedDevices = debugfs is null ? null : debugfs.TryGetValue(inode, out BufInfoEntry? e) ? e.Devices : [],
            });
        }

        // Held only through a mapping: no fdinfo to read, so debugfs (when readable) or the mapping says what it is.
        foreach ((ulong inode, (string? name, long extent, _)) in mapped.Where(kv => !byInode.ContainsKey(kv.Key)))
        {
            BufInfoEntry? e = null;
            debugfs?.TryGetValue(inode, out e);
            buffers.Add(new LsBuffer(inode, e?.Size ?? extent, e?.Exporter ?? "?", e is null ? name : e.Name, e?.Count ?? 0, [])
            {
                Mappings = MappingsOf(mapped, inode),
                AttachedDevices = debugfs is null ? null : e?.Devices ?? [],
            });
        }

        buffers.Sort((a, b) => a.Size != b.Size ? b.Size.CompareTo(a.Size) : a.Inode.CompareTo(b.Inode));
        return new LsReport(buffers, buffers.Sum(b => b.Size));
    }

    private sealed record MapsLine(ulong Inode, string? Name, long Bytes);

    private sealed record BufInfoEntry(long Size, string Exporter, long Count, string? Name, IReadOnlyList<string> Devices);

    private static IReadOnlyList<LsMapping> MappingsOf(Dictionary<ulong, (string? Name, long Extent, Dictionary<int, LsMapping> ByPid)> mapped, ulong inode) =>
        mapped.TryGetValue(inode, out var entry) ? [.. entry.ByPid.Values.OrderBy(m => m.Pid)] : [];

    /// <summary>
    /// The dma-buf lines of <c>/proc/[pid]/maps</c>: <c>start-end perms offset dev inode /dmabuf:NAME</c> (the path the
    /// kernel gives a dma-buf's file; memfds show <c>/memfd:</c> and are not listed).
    /// </summary>
    private static IEnumerable<MapsLine> ReadMaps(string pidDir)
    {
        string[] lines;
        try
        {
            lines = File.ReadAllLines(Path.Combine(pidDir, "maps"));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            yield break;
        }

        foreach (string line in lines)
        {
            Match m = MapsDmaBuf().Match(line);
            if (m.Success &&
                ulong.TryParse(m.Groups["start"].ValueSpan, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong start) &&
                ulong.TryParse(m.Groups["end"].ValueSpan, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong end) &&
                ulong.TryParse(m.Groups["inode"].ValueSpan, NumberStyles.None, CultureInfo.InvariantCulture, out ulong inode) &&
                end > start)
            {
                string name = m.Groups["name"].Value;
                yield return new MapsLine(inode, name.Length > 0 ? name : null, (long)(end - start));
            }
        }
    }

    [GeneratedRegex(@"^(?<start>[0-9a-f]+)-(?<end>[0-9a-f]+)\s+\S+\s+[0-9a-f]+\s+\S+\s+(?<inode>\d+)\s+/dmabuf:(?<name>.*)$")]
    private static partial Regex MapsDmaBuf();

    /// <summary>
    /// debugfs <c>dma_buf/bufinfo</c>: a line per buffer, tab-separated <c>size flags mode count exp_name ino name</c>
    /// (name <c>&lt;none&gt;</c> when unset), then its fences, then <c>Attached Devices:</c> and one device per line up
    /// to <c>Total N devices attached</c>. Null when the file cannot be read (debugfs not mounted, not root).
    /// </summary>
    private static Dictionary<ulong, BufInfoEntry>? ReadBufInfo(string path)
    {
        string[] lines;
        try
        {
            lines = File.ReadAllLines(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }

        var result = new Dictionary<ulong, BufInfoEntry>();
        (ulong Inode, BufInfoEntry Entry)? current = null;
        List<string>? devices = null;
        foreach (string line in lines)
        {
            string[] f = line.Split('\t');
            if (f.Length >= 7 && long.TryParse(f[0], NumberStyles.None, CultureInfo.InvariantCulture, out long size) &&
                ulong.TryParse(f[5], NumberStyles.None, CultureInfo.InvariantCulture, out ulong inode))
            {
                long.TryParse(f[3], NumberStyles.None, CultureInfo.InvariantCulture, out long count);
                string name = string.Join('\t', f[6..]);
                devices = null; // its fences come first; its devices after "Attached Devices:"
                current = (inode, new BufInfoEntry(size, f[4], count, name is "<none>" or "" ? null : name, new List<string>()));
                result[inode] = current.Value.Entry;
            }
            else if (line.Trim() == "Attached Devices:")
            {
                devices = current is null ? null : (List<string>)current.Value.Entry.Devices;
            }
            else if (line.StartsWith("Total ", StringComparison.Ordinal))
            {
                devices = null; // the end of a buffer's device list, or of the file
                current = line.EndsWith("devices attached", StringComparison.Ordinal) ? current : null;
            }
            else if (devices is not null && line.StartsWith('\t') && line.Trim().Length > 0)
            {
                devices.Add(line.Trim());
            }
        }

        return result;
    }

    private sealed record FdInfo(ulong Inode, long Size, string Exporter, string? Name, long Count);

    private static bool IsDmaBufLink(string fdPath)
    {
        string? target;
        try
        {
            target = new FileInfo(fdPath).LinkTarget;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }

        return target is not null &&
            (target.StartsWith("/dmabuf:", StringComparison.Ordinal) || target.StartsWith("anon_inode:dmabuf", StringComparison.Ordinal));
    }

    private static FdInfo? ReadFdInfo(string fdInfoPath, string fdPath)
    {
        string[] lines;
        try
        {
            lines = File.ReadAllLines(fdInfoPath);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null; // closed or the process exited since the fd was listed
        }

        ulong? inode = null;
        long? size = null;
        long count = 0;
        string? exporter = null;
        string? name = null;
        foreach (string line in lines)
        {
            int colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0)
            {
                continue;
            }

            string key = line[..colon];
            string value = line[(colon + 1)..].Trim();
            switch (key)
            {
                case "ino" when ulong.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out ulong i):
                    inode ??= i;
                    break;
                case "size" when long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out long s):
                    size ??= s;
                    break;
                case "count" when long.TryParse(value, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long c):
                    count = c;
                    break;
                case "exp_name":
                    exporter = value;
                    break;
                case "name":
                    name = value.Length > 0 ? value : null;
                    break;
            }
        }

        if (exporter is null || size is null)
        {
            return null; // not a dma-buf after all (the fd number was reused mid-walk)
        }

        // Kernels before 5.14 print no ino: line; the fd's own inode is the same number.
        inode ??= StatInode(fdPath);
        return inode is null ? null : new FdInfo(inode.Value, size.Value, exporter, name, count);
    }

    private static string? ReadComm(string pidDir)
    {
        try
        {
            return File.ReadAllText(Path.Combine(pidDir, "comm")).TrimEnd('\n');
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static IEnumerable<string> SafeEnumerate(string directory)
    {
        string[] entries;
        try
        {
            entries = Directory.GetFileSystemEntries(directory);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return [];
        }

        return entries;
    }

    private static ulong? StatInode(string path)
    {
        // struct stat begins with st_dev then st_ino, both 64-bit, on x86-64 and arm64 alike.
        Span<ulong> buffer = stackalloc ulong[32];
        return Interop.Stat(path, ref MemoryMarshal.GetReference(buffer)) == 0 ? buffer[1] : null;
    }

    private static partial class Interop
    {
        [LibraryImport("libc", EntryPoint = "stat", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        internal static partial int Stat(string path, ref ulong buffer);
    }
}

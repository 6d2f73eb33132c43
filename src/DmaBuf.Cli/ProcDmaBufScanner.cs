using System.Globalization;
using System.Runtime.InteropServices;

namespace DmaBuf.Cli;

/// <summary>One process's hold on a dma-buf: an open file descriptor.</summary>
internal sealed record LsHolder(int Pid, string Comm, int Fd);

/// <summary>One dma-buf, identified by its inode, with every process that holds an fd of it.</summary>
internal sealed record LsBuffer(ulong Inode, long Size, string Exporter, string? Name, long Count, IReadOnlyList<LsHolder> Holders);

/// <summary>The document <c>dmabuf ls --json</c> prints.</summary>
internal sealed record LsReport(IReadOnlyList<LsBuffer> Buffers, long TotalBytes);

/// <summary>
/// Finds every dma-buf held through a file descriptor by walking <c>/proc/[pid]/fd</c> and <c>/proc/[pid]/fdinfo</c>,
/// the way Android's <c>dmabuf_dump</c> does.
/// </summary>
/// <remarks>
/// A dma-buf fd links to <c>/dmabuf:NAME</c> (or <c>anon_inode:dmabuf</c> on old kernels); its fdinfo carries the
/// exporter's lines <c>size:</c>, <c>count:</c>, <c>exp_name:</c> and, once named, <c>name:</c>, after the generic
/// <c>ino:</c> line. Buffers are grouped by inode, never by fd number or name (rule 6): two processes' fds of one
/// buffer are one buffer. Processes and fds that vanish or refuse access while the walk runs are skipped.
/// </remarks>
internal static partial class ProcDmaBufScanner
{
    /// <summary>Walks <paramref name="procRoot"/> (normally <c>/proc</c>) and returns the buffers found, largest first.</summary>
    public static LsReport Scan(string procRoot)
    {
        var byInode = new Dictionary<ulong, (FdInfo Info, List<LsHolder> Holders)>();
        foreach (string pidDir in SafeEnumerate(procRoot))
        {
            if (!int.TryParse(Path.GetFileName(pidDir), NumberStyles.None, CultureInfo.InvariantCulture, out int pid))
            {
                continue;
            }

            string? comm = null;
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

        List<LsBuffer> buffers = [.. byInode
            .Select(kv => new LsBuffer(
                kv.Key, kv.Value.Info.Size, kv.Value.Info.Exporter, kv.Value.Info.Name, kv.Value.Info.Count,
                [.. kv.Value.Holders.OrderBy(h => h.Pid).ThenBy(h => h.Fd)]))
            .OrderByDescending(b => b.Size)
            .ThenBy(b => b.Inode)];
        return new LsReport(buffers, buffers.Sum(b => b.Size));
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

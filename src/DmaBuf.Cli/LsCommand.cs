using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Spectre.Console;

namespace DmaBuf.Cli;

/// <summary><c>dmabuf ls</c>: every dma-buf held by a process on this system, with its holders.</summary>
internal static class LsCommand
{
    public static Command Create(IAnsiConsole console, TextWriter stdout)
    {
        var json = new Option<bool>("--json") { Description = "Print one JSON document instead of a table." };

        // Lets tests point the walk at a synthetic tree; not part of the documented interface.
        var procRoot = new Option<string>("--proc-root")
        {
            Description = "Directory to read instead of /proc.",
            DefaultValueFactory = _ => "/proc",
            Hidden = true,
        };

        var bufInfo = new Option<string>("--bufinfo")
        {
            Description = "debugfs bufinfo file to read instead of " + ProcDmaBufScanner.BufInfoPath + ".",
            DefaultValueFactory = _ => ProcDmaBufScanner.BufInfoPath,
            Hidden = true,
        };

        var command = new Command(
            "ls", "List every dma-buf held by a process on this system (through an fd or a mapping): size, exporter, name, holders, attached devices.");
        command.Options.Add(json);
        command.Options.Add(procRoot);
        command.Options.Add(bufInfo);
        command.SetAction(parse =>
        {
            LsReport report = ProcDmaBufScanner.Scan(parse.GetValue(procRoot)!, parse.GetValue(bufInfo)!);
            if (parse.GetValue(json))
            {
                stdout.WriteLine(JsonSerializer.Serialize(report, CliJsonContext.Default.LsReport));
            }
            else
            {
                WriteTable(console, report);
            }

            return (int)ExitCode.Ok;
        });
        return command;
    }

    private static void WriteTable(IAnsiConsole console, LsReport report)
    {
        if (report.Buffers.Count == 0)
        {
            console.WriteLine("No dma-bufs are held by any process visible here.");
            return;
        }

        CultureInfo c = CultureInfo.InvariantCulture;
        var table = new Table().Border(TableBorder.Rounded);
        table.AddColumn(new TableColumn("inode").RightAligned());
        table.AddColumn(new TableColumn("size").RightAligned());
        table.AddColumn("exporter");
        table.AddColumn("name");
        table.AddColumn(new TableColumn("count").RightAligned());
        table.AddColumn(Markup.Escape("holders (comm[pid]:fd)"));
        table.AddColumn(Markup.Escape("mapped by (comm[pid] bytes)"));
        bool debugfs = report.Buffers.Any(b => b.AttachedDevices is not null);
        if (debugfs)
        {
            table.AddColumn("attached devices");
        }

        foreach (LsBuffer b in report.Buffers)
        {
            List<string> row =
            [
                b.Inode.ToString(c),
                Markup.Escape(FormatSize(b.Size)),
                Markup.Escape(b.Exporter),
                Markup.Escape(b.Name ?? "-"),
                b.Count.ToString(c),
                Markup.Escape(b.Holders.Count == 0 ? "-" : string.Join(", ", b.Holders.Select(h => $"{h.Comm}[{h.Pid.ToString(c)}]:{h.Fd.ToString(c)}"))),
                Markup.Escape(b.Mappings.Count == 0 ? "-" : string.Join(", ", b.Mappings.Select(m => $"{m.Comm}[{m.Pid.ToString(c)}] {FormatSize(m.Bytes)}"))),
            ];
            if (debugfs)
            {
                row.Add(Markup.Escape(b.AttachedDevices is { Count: > 0 } d ? string.Join(", ", d) : "-"));
            }

            table.AddRow([.. row]);
        }

        console.Write(table);
        int processes = report.Buffers.SelectMany(b => b.Holders.Select(h => h.Pid).Concat(b.Mappings.Select(m => m.Pid))).Distinct().Count();
        console.WriteLine(
            $"{report.Buffers.Count.ToString(c)} buffers, {FormatSize(report.TotalBytes)} in total, held by {processes.ToString(c)} processes.");
    }

    private static string FormatSize(long bytes)
    {
        CultureInfo c = CultureInfo.InvariantCulture;
        return bytes switch
        {
            >= 1L << 30 => (bytes / (double)(1L << 30)).ToString("0.0 GiB", c),
            >= 1L << 20 => (bytes / (double)(1L << 20)).ToString("0.0 MiB", c),
            >= 1L << 10 => (bytes / (double)(1L << 10)).ToString("0.0 KiB", c),
            _ => bytes.ToString(c) + " B",
        };
    }
}

using System.CommandLine;
using Spectre.Console;

namespace DmaBuf.Cli;

/// <summary>The <c>dmabuf</c> root command.</summary>
public static class DmaBufCommand
{
    /// <summary>Parses <paramref name="args"/>, runs the command and returns its <see cref="ExitCode"/>.</summary>
    /// <param name="args">Command-line arguments.</param>
    /// <param name="stdout">Where output goes.</param>
    /// <param name="stderr">Where errors go.</param>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        ArgumentNullException.ThrowIfNull(stdout);
        ArgumentNullException.ThrowIfNull(stderr);
        IAnsiConsole console = ReferenceEquals(stdout, Console.Out)
            ? AnsiConsole.Console
            : AnsiConsole.Create(new AnsiConsoleSettings
            {
                Out = new AnsiConsoleOutput(stdout),
                Ansi = AnsiSupport.No,
                ColorSystem = ColorSystemSupport.NoColors,
                Interactive = InteractionSupport.No,
            });
        if (!ReferenceEquals(stdout, Console.Out) || Console.IsOutputRedirected)
        {
            // Not a terminal: no width to fit, so give the side-by-side table room instead of wrapping it.
            console.Profile.Width = 160;
        }

        // A plain command named dmabuf rather than a RootCommand, whose name would be the assembly's (DmaBuf.Cli) however
        // the tool is started.
        var root = new Command("dmabuf", "dmabuf: the Linux dma-buf sharing model, its mapping strategies measured side by side.")
        {
            new System.CommandLine.Help.HelpOption(),
            new VersionOption(),
        };
        root.Subcommands.Add(SimulateCommand.Create(console, stdout, stderr));
        root.Subcommands.Add(SweepCommand.Create(console, stdout, stderr));
        root.Subcommands.Add(ShareCommand.Create(console, stdout, stderr));
        root.Subcommands.Add(LsCommand.Create(console, stdout));
        root.Subcommands.Add(StressCommand.Create(console, stdout, stderr));

        ParseResult parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (System.CommandLine.Parsing.ParseError e in parse.Errors)
            {
                stderr.WriteLine($"error: {e.Message}");
            }

            string command = parse.CommandResult.Command == root ? "dmabuf" : "dmabuf " + CommandPath(parse.CommandResult);
            stderr.WriteLine($"Run '{command} --help' for usage.");
            return (int)ExitCode.Usage;
        }

        try
        {
            return parse.Invoke(new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false });
        }
        catch (Exception e) when (e is ArgumentException or FormatException or OverflowException)
        {
            stderr.WriteLine($"error: {e.Message}");
            return (int)ExitCode.Usage;
        }
        catch (MachineLimitException e)
        {
            stderr.WriteLine($"error: {e.Message}");
            return (int)ExitCode.FeatureMissing;
        }
        catch (OutOfMemoryException)
        {
            stderr.WriteLine("error: this machine ran out of memory for the run; lower --pool, --frames or --resolution.");
            return (int)ExitCode.FeatureMissing;
        }
        catch (UnauthorizedAccessException e) when (e.InnerException is IOException inner)
        {
            // What .NET throws for a write to a closed standard output (EBADF).
            TryWrite(stderr, $"error: cannot write the output: {inner.Message.TrimEnd()} (is standard output closed?)");
            return (int)ExitCode.FeatureMissing;
        }
        catch (IOException e)
        {
            // The output went to a full disk or a closed pipe, or a file could not be written: say so on stderr, which may
            // still be open.
            TryWrite(stderr, $"error: cannot write the output: {e.Message.TrimEnd()}");
            return (int)ExitCode.FeatureMissing;
        }
    }

    private static void TryWrite(TextWriter writer, string line)
    {
        try
        {
            writer.WriteLine(line);
            writer.Flush();
        }
        catch (IOException)
        {
            // stderr is gone as well: the exit code is all that is left to tell.
        }
    }

    private static string CommandPath(System.CommandLine.Parsing.CommandResult result)
    {
        var names = new List<string>();
        for (System.CommandLine.Parsing.SymbolResult? r = result; r is System.CommandLine.Parsing.CommandResult c && c.Parent is not null; r = r.Parent)
        {
            names.Insert(0, c.Command.Name);
        }

        return string.Join(' ', names);
    }
}

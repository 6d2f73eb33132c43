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

        var root = new RootCommand("dmabuf: the Linux dma-buf sharing model, its mapping strategies measured side by side.");
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

            stderr.WriteLine("Run 'dmabuf --help' or 'dmabuf simulate --help' for usage.");
            return (int)ExitCode.Usage;
        }

        try
        {
            return parse.Invoke(new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false });
        }
        catch (Exception e) when (e is ArgumentException or FormatException or OutOfMemoryException)
        {
            stderr.WriteLine($"error: {e.Message}");
            return (int)ExitCode.Usage;
        }
    }
}

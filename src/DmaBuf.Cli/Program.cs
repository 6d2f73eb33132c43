using DmaBuf.Cli;

// Ctrl-C while progress bars are drawn would leave the terminal's cursor hidden: show it again before the process ends.
Console.CancelKeyPress += (_, _) =>
{
    if (!Console.IsOutputRedirected)
    {
        // Written straight to the terminal: the progress display may hold Spectre's console lock at this moment.
        using Stream terminal = Console.OpenStandardOutput();
        terminal.Write("\e[?25h"u8);
    }
};

return DmaBufCommand.Run(args, Console.Out, Console.Error);

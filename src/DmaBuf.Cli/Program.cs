using DmaBuf.Cli;

return DmaBufCommand.Run(args, Console.Out, Console.Error);

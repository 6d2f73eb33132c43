namespace DmaBuf.Cli.Tests;

/// <summary>Runs the <c>dmabuf</c> command in process, as a user would from a shell.</summary>
internal static class Cli
{
    /// <summary>The exit code, standard output and standard error of <c>dmabuf <paramref name="args"/></c>.</summary>
    public static (int Code, string Out, string Err) Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = DmaBufCommand.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }
}

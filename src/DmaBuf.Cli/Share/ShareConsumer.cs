using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using DmaBuf.Linux;

namespace DmaBuf.Cli;

/// <summary>Starts <c>dmabuf share consumer</c> as the second process: this executable, or the CLI's assembly under the dotnet host.</summary>
internal static class ShareConsumer
{
    public static Process Start(string socketName, long frameSize, int pool, RingWait? ringWait)
    {
        var info = new ProcessStartInfo { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        string? self = Environment.ProcessPath;
        string selfName = Path.GetFileName(self) ?? ""; // not ...WithoutExtension: "DmaBuf.Cli.Tests" would become "DmaBuf.Cli"
        if (self is not null && selfName is "dmabuf" or "DmaBuf.Cli")
        {
            info.FileName = self;
        }
        else
        {
            // Run as 'dotnet DmaBuf.Cli.dll' (or hosted by another program, e.g. the tests): start the same assembly.
            info.FileName = selfName == "dotnet" ? self! : DotnetHost();
            info.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "DmaBuf.Cli.dll"));
        }

        foreach (string a in new[] { "share", "consumer", "--socket", socketName, "--frame-size", frameSize.ToString(CultureInfo.InvariantCulture), "--pool", pool.ToString(CultureInfo.InvariantCulture) })
        {
            info.ArgumentList.Add(a);
        }

        if (ringWait is RingWait w)
        {
            info.ArgumentList.Add("--ring-wait");
            info.ArgumentList.Add(w.ToString().ToLowerInvariant());
        }

        return Process.Start(info) ?? throw new InvalidOperationException($"Could not start the consumer ({info.FileName}).");
    }

    /// <summary>The dotnet host that runs this runtime: …/dotnet next to shared/Microsoft.NETCore.App/&lt;version&gt;.</summary>
    private static string DotnetHost()
    {
        string candidate = Path.GetFullPath(Path.Combine(RuntimeEnvironment.GetRuntimeDirectory(), "..", "..", "..", "dotnet"));
        return File.Exists(candidate) ? candidate : "dotnet";
    }
}

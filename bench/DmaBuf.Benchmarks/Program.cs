using BenchmarkDotNet.Running;

namespace DmaBuf.Benchmarks;

/// <summary>
/// The BenchmarkDotNet host: <c>dotnet run -c Release --project bench/DmaBuf.Benchmarks -- --filter '*'</c>.
/// <c>-- frame-costs [pool] [seed]</c> instead prints the per-buffer simulated cost breakdown of
/// <see cref="FrameCostProbe"/>.
/// </summary>
public static class Program
{
    /// <summary>Runs the benchmarks chosen on the command line, or the frame-cost probe.</summary>
    public static void Main(string[] args)
    {
        if (args.Length > 0 && args[0] == "frame-costs")
        {
            FrameCostProbe.Run(args.AsSpan(1));
            return;
        }

        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
    }
}

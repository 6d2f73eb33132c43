using BenchmarkDotNet.Running;

namespace DmaBuf.Benchmarks;

/// <summary>The BenchmarkDotNet host: <c>dotnet run -c Release --project bench/DmaBuf.Benchmarks -- --filter '*'</c>.</summary>
public static class Program
{
    /// <summary>Runs the benchmarks chosen on the command line.</summary>
    public static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
}

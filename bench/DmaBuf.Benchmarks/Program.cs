using BenchmarkDotNet.Running;

namespace DmaBuf.Benchmarks;

/// <summary>
/// The BenchmarkDotNet host: <c>dotnet run -c Release --project bench/DmaBuf.Benchmarks -- --filter '*'</c>.
/// <c>-- frame-costs [pool] [seed]</c> instead prints the per-buffer simulated cost breakdown of
/// <see cref="FrameCostProbe"/>; <c>-- peers</c> the cross-process comparison of <see cref="PeersComparison"/>; <c>-- ring-inprocess</c> the ring's
/// software cost in one process (<see cref="RingInProcess"/>).
/// </summary>
public static class Program
{
    /// <summary>Runs the benchmarks chosen on the command line, the frame-cost probe, or the peers comparison (and its child).</summary>
    public static int Main(string[] args)
    {
        switch (args.Length > 0 ? args[0] : "")
        {
            case "frame-costs":
                FrameCostProbe.Run(args.AsSpan(1));
                return 0;
            case "peers":
                return PeersComparison.Run(args.AsSpan(1));
            case "ring-inprocess":
                return RingInProcess.Run(args.AsSpan(1));
            case "peers-netmq-child":
                return NetMqPeer.RunChild(args.AsSpan(1));
            default:
                BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
                return 0;
        }
    }
}

using System.Globalization;

namespace DmaBuf.Stress.Tests;

/// <summary>
/// How much the stress tests do. CI runs the defaults; the long run sets the environment variables, e.g.
/// <c>DMABUF_STRESS_MODEL_OPS=10000000 DMABUF_STRESS_COYOTE_ITERATIONS=100000 dotnet test --project tests/DmaBuf.Stress.Tests</c>.
/// </summary>
internal static class StressSettings
{
    /// <summary>Model operations over all model tests together (DMABUF_STRESS_MODEL_OPS).</summary>
    public static long ModelOperations { get; } = Read("DMABUF_STRESS_MODEL_OPS", 120_000);

    /// <summary>Coyote iterations per race (DMABUF_STRESS_COYOTE_ITERATIONS).</summary>
    public static uint CoyoteIterations { get; } = (uint)Read("DMABUF_STRESS_COYOTE_ITERATIONS", 1_000);

    /// <summary>Real-thread iterations per race (DMABUF_STRESS_THREAD_ITERATIONS).</summary>
    public static int ThreadIterations { get; } = (int)Read("DMABUF_STRESS_THREAD_ITERATIONS", 2_000);

    private static long Read(string name, long fallback) =>
        Environment.GetEnvironmentVariable(name) is { Length: > 0 } text
            ? long.Parse(text, NumberStyles.None, CultureInfo.InvariantCulture)
            : fallback;
}

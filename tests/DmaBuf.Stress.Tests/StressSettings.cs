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

    /// <summary>
    /// Races to run (DMABUF_STRESS_RACES, comma-separated scenario names); all when unset. For splitting a long run
    /// over several processes: the others skip, saying so.
    /// </summary>
    public static IReadOnlySet<string>? Races { get; } =
        Environment.GetEnvironmentVariable("DMABUF_STRESS_RACES") is { Length: > 0 } list
            ? list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToHashSet(StringComparer.Ordinal)
            : null;

    /// <summary>Seed of Coyote's scheduler (DMABUF_STRESS_COYOTE_SEED), so a long run can explore other schedules than CI's.</summary>
    public static uint CoyoteSeed { get; } = (uint)Read("DMABUF_STRESS_COYOTE_SEED", 20251);

    private static long Read(string name, long fallback) =>
        Environment.GetEnvironmentVariable(name) is { Length: > 0 } text
            ? long.Parse(text, NumberStyles.None, CultureInfo.InvariantCulture)
            : fallback;
}

using System.Reflection;

namespace DmaBuf.Simulation.Tests;

public sealed class SimStatsTests
{
    private static readonly FieldInfo[] s_counters = typeof(SimStats).GetFields(BindingFlags.Public | BindingFlags.Instance);

    [Fact]
    public void Clone_ThenChangeOriginal_CopyKeepsOldValues()
    {
        var stats = new SimStats { MapCalls = 3, MappingNs = 1234 };

        SimStats copy = stats.Clone();
        stats.MapCalls++;

        Assert.Equal(3, copy.MapCalls);
        Assert.Equal(1234, copy.MappingNs);
        Assert.Equal(4, stats.MapCalls);
    }

    [Fact]
    public void Reset_AllCountersSet_ZeroesEveryCounter()
    {
        var stats = new SimStats();
        foreach (FieldInfo field in s_counters)
        {
            field.SetValue(stats, 7L);
        }

        stats.Reset();

        Assert.NotEmpty(s_counters);
        Assert.All(s_counters, f => Assert.Equal(0L, (long)f.GetValue(stats)!));
    }
}

using System.Globalization;
using DmaBuf.Simulation;

namespace DmaBuf.Benchmarks;

/// <summary>
/// Not a timing benchmark: prints, for each buffer of a playback pool, what one map and one unmap of it cost in
/// simulated time and in hardware work (chunks, coalesced runs, leaf entries, invalidation commands), so the hand
/// derivation in docs/cost-model.md can be checked buffer by buffer. The SoC is built as the playback scenario builds
/// it (same memory size formula, same seed), so the physical placement is the one the scenario sees.
/// <c>dotnet run -c Release --project bench/DmaBuf.Benchmarks -- frame-costs [pool] [seed]</c>
/// </summary>
public static class FrameCostProbe
{
    private const int FrameBytes = 1920 * 1080 * 3 / 2;

    /// <summary>Runs the probe for smmuv3-strict (strict), vtd-lazy (lazy) and vtd-lazy forced strict.</summary>
    public static void Run(ReadOnlySpan<string> args)
    {
        int pool = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 16;
        int seed = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 1;
        Probe("smmuv3-strict", IommuMode.Strict, pool, seed);
        Probe("vtd-lazy", IommuMode.Lazy, pool, seed);
        Probe("vtd-lazy", IommuMode.Strict, pool, seed);
    }

    private static void Probe(string profileName, IommuMode mode, int pool, int seed)
    {
        // As FrameScenarioRunner sizes the SoC for one resolution (keep in step with it).
        long frame = RoundUp(FrameBytes, PhysicalMemory.PageSize);
        var soc = new Soc(new SocOptions
        {
            MemoryBytes = RoundUp((long)(pool * (frame + PhysicalMemory.PageSize) * 1.25) + (64L << 20), 4L << 20),
            ContiguousBytes = 16L << 20,
            Profile = CostProfile.Load(profileName),
            Mode = mode,
            Seed = seed,
        });

        var buffers = new DmaBufHandle[pool];
        for (int i = 0; i < pool; i++)
        {
            buffers[i] = soc.SystemHeap.Allocate(FrameBytes, $"frame-{i}");
        }

        Console.WriteLine($"profile {profileName}, mode {mode.ToString().ToLowerInvariant()}, pool {pool}, seed {seed}, device display");
        Console.WriteLine("buffer  chunks  runs  leaves  blocks  tlbiCmds  mapNs  unmapNs  flushNs  totalNs");
        long sumTotal = 0;
        SimDevice device = soc.Display;
        for (int i = 0; i < pool; i++)
        {
            DmaBufHandle h = buffers[i];
            ScatterTable physical = soc.SystemHeap.AllocationOf(h.Buffer).Physical;
            int chunks = physical.Count;
            int runs = physical.Coalesced().Count;

            SimStats s0 = soc.Stats.Clone();
            using DmaBufAttachment attachment = h.Attach(device);
            ScatterTable mapped = attachment.Map(DmaDirection.ToDevice);
            SimStats s1 = soc.Stats.Clone();
            attachment.Unmap(mapped);
            SimStats s2 = soc.Stats.Clone();
            soc.FlushAll(); // lazy: the flush this unmap's queue entry waits for (the 10 ms timer fires between frames)
            SimStats s3 = soc.Stats.Clone();

            long leaves = s1.PagesMapped - s0.PagesMapped;
            // Each 2 MiB block stands for 512 pages: pages = (leaves - blocks) + 512 * blocks.
            long pages = (FrameBytes + PhysicalMemory.PageSize - 1) / PhysicalMemory.PageSize;
            long blocks = (pages - leaves) / 511;
            long mapNs = s1.MappingNs - s0.MappingNs;
            long unmapNs = s2.MappingNs - s1.MappingNs;
            long flushNs = s3.MappingNs - s2.MappingNs;
            long cmds = s3.IotlbInvalidations - s1.IotlbInvalidations;
            long total = mapNs + unmapNs + flushNs;
            sumTotal += total;
            Console.WriteLine(string.Create(
                CultureInfo.InvariantCulture,
                $"{i,6}  {chunks,6}  {runs,4}  {leaves,6}  {blocks,6}  {cmds,8}  {mapNs,5}  {unmapNs,7}  {flushNs,7}  {total,7}"));
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"mean map+unmap per buffer: {(double)sumTotal / pool:F1} ns"));
        Console.WriteLine();
        foreach (DmaBufHandle h in buffers)
        {
            h.Dispose();
        }
    }

    private static long RoundUp(long value, long multiple) => (value + multiple - 1) / multiple * multiple;
}

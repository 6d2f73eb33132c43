// The simulator from code: build a SoC, share one buffer between two devices behind IOMMUs, move real bytes through
// their mappings and read the counters; then run a whole scenario with two strategies and compare them.
using DmaBuf;
using DmaBuf.Simulation;

// 1. One buffer, two devices. The decoder writes a frame through its IOMMU mapping; the display reads it back through
//    its own. Every access is translated by the device's IOMMU page table, and every map call costs simulated time.
var soc = new Soc(new SocOptions { MemoryBytes = 64L << 20, Profile = CostProfile.Load("smmuv3-strict") });
bool allGood;
using (DmaBufHandle buffer = soc.SystemHeap.Allocate(1920 * 1080 * 3 / 2, "frame"))
{
    DmaBufAttachment decoder = buffer.Attach(soc.Vpu);
    DmaBufAttachment display = buffer.Attach(soc.Display);
    ScatterTable written = decoder.Map(DmaDirection.FromDevice); // the device writes: data comes from it
    ScatterTable read = display.Map(DmaDirection.ToDevice);     // the device reads: data goes to it

    byte[] frame = new byte[4096];
    Random.Shared.NextBytes(frame);
    byte[] seen = new byte[frame.Length];
    bool wrote = soc.Vpu.DmaWrite(written, 0, frame);
    bool gotIt = soc.Display.DmaRead(read, 0, seen);
    allGood = wrote && gotIt && frame.AsSpan().SequenceEqual(seen);
    Console.WriteLine($"decoder wrote: {wrote}, display read: {gotIt}, same bytes: {frame.AsSpan().SequenceEqual(seen)}");

    decoder.Unmap(written);
    display.Unmap(read);
    decoder.Dispose();
    display.Dispose();
}

Console.WriteLine($"map calls {soc.Stats.MapCalls}, pages mapped {soc.Stats.PagesMapped}, IOTLB invalidations {soc.Stats.IotlbInvalidations}, " +
    $"simulated mapping time {soc.Stats.MappingNs / 1000.0:0.0} µs, DMA faults {soc.Stats.DmaFaults}");

// 2. A scenario: 1080p playback, decoder -> display and GPU, 20 buffers in the pool, 300 frames. remap maps every
//    frame for every importer; keep-attachment keeps each importer's mapping for as long as it holds the buffer.
Scenario playback = Scenario.Load("playback");
var options = new ScenarioOptions { Frames = 300 }; // the other settings keep their defaults: pool 20, 1080p
foreach (string strategy in new[] { "remap", "keep-attachment" })
{
    StrategyResult r = playback.Run(strategy, options);
    allGood &= r.Safety.Ok;
    Console.WriteLine($"{r.Strategy,-16} map calls {r.Counters.MapCalls,5}  mapping {r.Simulated.MappingNsPerFrame / 1000,6:0.0} µs/frame  " +
        $"frames verified {r.Safety.FramesVerified}  safety {(r.Safety.Ok ? "held" : "FAILED")}");
}

return allGood && soc.Stats.DmaFaults == 0 ? 0 : 1;

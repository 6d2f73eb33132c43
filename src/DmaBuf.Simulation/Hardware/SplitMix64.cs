namespace DmaBuf.Simulation;

// A small deterministic generator (SplitMix64): the same seed gives the same sequence on every runtime and platform,
// which System.Random does not promise.
internal struct SplitMix64
{
    private ulong _state;

    public SplitMix64(ulong seed) => _state = seed;

    public ulong Next()
    {
        ulong z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>A value in [0, bound).</summary>
    public int Next(int bound) => (int)((Next() >> 32) * (ulong)bound >> 32);
}

namespace DmaBuf.Simulation;

/// <summary>Process-wide identities for simulated address spaces.</summary>
public static class AddressSpaceIds
{
    /// <summary>How many faults an address space keeps in its fault list; later faults are only counted.</summary>
    public const int MaxRecordedFaults = 1024;

    private static long s_next;

    /// <summary>A new identity, never returned before in this process.</summary>
    public static long Next() => Interlocked.Increment(ref s_next);
}

namespace DmaBuf.Simulation;

/// <summary>The state of one simulated page frame.</summary>
public enum PageState : byte
{
    /// <summary>Owned by the allocator: not in use, poisoned.</summary>
    Free = 0,

    /// <summary>Allocated to an owner.</summary>
    Allocated = 1,

    /// <summary>Freed by its owner but held back because a device can still reach it (design rule 8).</summary>
    FreePending = 2,
}

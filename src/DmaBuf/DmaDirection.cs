namespace DmaBuf;

/// <summary>Direction of a DMA mapping, as <c>enum dma_data_direction</c>.</summary>
public enum DmaDirection
{
    /// <summary>The device may read and write.</summary>
    Bidirectional = 0,

    /// <summary>The device reads (memory to device).</summary>
    ToDevice = 1,

    /// <summary>The device writes (device to memory).</summary>
    FromDevice = 2,
}

/// <summary>Direction of CPU access between begin and end of CPU access, as <c>DMA_BUF_SYNC_READ/WRITE</c>.</summary>
[Flags]
public enum CpuAccess
{
    /// <summary>The CPU reads the buffer.</summary>
    Read = 1,

    /// <summary>The CPU writes the buffer.</summary>
    Write = 2,

    /// <summary>The CPU reads and writes the buffer.</summary>
    ReadWrite = Read | Write,
}

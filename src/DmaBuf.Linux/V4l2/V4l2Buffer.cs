// Ownership: a dequeued DMABUF buffer carries the reference the device held while it was queued; the V4l2Buffer owns it
// from then on and drops it on Dispose. Callers that keep the buffer longer duplicate DmaBuf, or queue it again (which
// takes a reference of its own) and then dispose the V4l2Buffer.
namespace DmaBuf.Linux.V4l2;

/// <summary>
/// A buffer dequeued from a capture queue (<c>struct v4l2_buffer</c> from <c>VIDIOC_DQBUF</c>): which one, how much
/// the device wrote, and when. For a <see cref="V4l2Memory.DmaBuf"/> queue it carries the dma-buf that was queued.
/// </summary>
public sealed class V4l2Buffer : IDisposable
{
    internal V4l2Buffer(
        int index, V4l2Memory memory, int bytesUsed, uint sequence, TimeSpan timestamp, V4l2BufferFlags flags, V4l2Field field, DmaBufHandle? dmaBuf)
    {
        Index = index;
        Memory = memory;
        BytesUsed = bytesUsed;
        Sequence = sequence;
        Timestamp = timestamp;
        Flags = flags;
        Field = field;
        DmaBuf = dmaBuf;
    }

    /// <summary>The buffer's index in the queue (0 to the granted count - 1).</summary>
    public int Index { get; }

    /// <summary>The queue's memory type.</summary>
    public V4l2Memory Memory { get; }

    /// <summary>Bytes of image data the device wrote (<c>bytesused</c>).</summary>
    public int BytesUsed { get; }

    /// <summary>The frame's number (<c>sequence</c>), counting from 0 at stream on; gaps mean dropped frames.</summary>
    public uint Sequence { get; }

    /// <summary>When the frame was captured, on the clock <see cref="Flags"/> names (usually <c>CLOCK_MONOTONIC</c>).</summary>
    public TimeSpan Timestamp { get; }

    /// <summary>The buffer's flags; <see cref="V4l2BufferFlags.Error"/> means the data may be corrupt.</summary>
    public V4l2BufferFlags Flags { get; }

    /// <summary>The field the buffer holds.</summary>
    public V4l2Field Field { get; }

    /// <summary>
    /// For a <see cref="V4l2Memory.DmaBuf"/> queue, the dma-buf the device wrote into: the reference the device held
    /// while the buffer was queued, now owned by this object (disposed with it). Null for an <see cref="V4l2Memory.Mmap"/> queue.
    /// </summary>
    public DmaBufHandle? DmaBuf { get; }

    /// <summary>Drops the dma-buf reference, if any.</summary>
    public void Dispose() => DmaBuf?.Dispose();

    /// <inheritdoc/>
    public override string ToString() =>
        $"buffer {Index} ({Memory}): {BytesUsed} bytes, sequence {Sequence}, at {Timestamp.TotalSeconds:F6} s, flags {Flags}";
}

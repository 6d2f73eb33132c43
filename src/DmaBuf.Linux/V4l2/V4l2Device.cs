// Ownership: the device owns its node's descriptor. While a DMABUF buffer is queued the device holds a reference of its
// own to it (a Duplicate of the caller's handle), so the caller may dispose its handle at once: the buffer cannot be
// released under the device. The reference leaves the device with the buffer on Dequeue (handed to the V4l2Buffer), and
// is dropped when the kernel gives every buffer back: StreamOff, RequestBuffers, Dispose. The kernel keeps a dma-buf
// reference of its own for a queued buffer too; ours keeps our side (descriptor, mapping, registry entry) alive.
// Exported buffers (ExportBuffer) are owned by whoever receives them; the device only remembers which buffer it
// exported for an index, without a reference, so that exporting the index again gives the same buffer.
using System.Diagnostics;

namespace DmaBuf.Linux.V4l2;

/// <summary>
/// A V4L2 video capture device (<c>/dev/videoN</c>) driven through its single-planar capture queue
/// (<c>V4L2_BUF_TYPE_VIDEO_CAPTURE</c>) with streaming I/O: formats (<c>VIDIOC_ENUM_FMT</c>, <c>G_FMT</c>,
/// <c>S_FMT</c>), buffers (<c>VIDIOC_REQBUFS</c>), queueing (<c>VIDIOC_QBUF</c>, <c>VIDIOC_DQBUF</c>), streaming
/// (<c>VIDIOC_STREAMON</c>, <c>STREAMOFF</c>), and both directions of dma-buf sharing: capture into dma-bufs we
/// allocated (<see cref="V4l2Memory.DmaBuf"/>, <see cref="QueueDmaBuf"/>) and the driver's own buffers exported to us
/// (<see cref="V4l2Memory.Mmap"/>, <see cref="ExportBuffer"/>, <c>VIDIOC_EXPBUF</c>).
/// </summary>
/// <remarks>
/// The node is opened non-blocking; <see cref="Dequeue"/> waits with <c>poll</c>. Members are thread-safe, but one
/// thread dequeueing at a time is the intended use. Failures the kernel reports are <see cref="LinuxErrorException"/>s
/// naming the ioctl and the errno; misuse this class can see (an index out of range, a buffer queued twice, a call on
/// the wrong memory type) is refused before the kernel is asked.
/// </remarks>
public sealed class V4l2Device : IDisposable
{
    private const uint BufType = Interop.Libc.V4L2_BUF_TYPE_VIDEO_CAPTURE;

    private readonly Lock _lock = new();
    private readonly SafeFdHandle _fd;
    private readonly ImportCache _imports;
    private V4l2Memory? _memory;
    private bool[] _queued = [];
    private DmaBufHandle?[] _held = [];
    private DmaBuffer?[] _exported = [];
    private int _queuedCount;
    private bool _streaming;
    private bool _disposed;

    private V4l2Device(string path, SafeFdHandle fd, V4l2Capability capability, ImportCache imports)
    {
        Path = path;
        _fd = fd;
        Capability = capability;
        _imports = imports;
    }

    /// <summary>The node's path, e.g. <c>/dev/video0</c>.</summary>
    public string Path { get; }

    /// <summary>What <c>VIDIOC_QUERYCAP</c> said about the node.</summary>
    public V4l2Capability Capability { get; }

    /// <summary>Buffers granted by the last <see cref="RequestBuffers"/> (0 before it).</summary>
    public int BufferCount
    {
        get
        {
            lock (_lock)
            {
                return _queued.Length;
            }
        }
    }

    /// <summary>The memory type of the last <see cref="RequestBuffers"/>, or null before it.</summary>
    public V4l2Memory? Memory
    {
        get
        {
            lock (_lock)
            {
                return _memory;
            }
        }
    }

    /// <summary>Buffers queued and not yet dequeued.</summary>
    public int QueuedCount
    {
        get
        {
            lock (_lock)
            {
                return _queuedCount;
            }
        }
    }

    /// <summary>Whether the queue is streaming (between <see cref="StreamOn"/> and <see cref="StreamOff"/>).</summary>
    public bool IsStreaming
    {
        get
        {
            lock (_lock)
            {
                return _streaming;
            }
        }
    }

    /// <summary>Opens the V4L2 node at <paramref name="path"/>, which must offer single-planar video capture with streaming I/O.</summary>
    /// <param name="path">The node, e.g. <c>/dev/video0</c>.</param>
    /// <param name="imports">Where exported buffers are imported; <see cref="ImportCache.Shared"/> when null.</param>
    /// <exception cref="LinuxErrorException">The path cannot be opened, or is not a V4L2 node (<c>VIDIOC_QUERYCAP</c>
    /// fails, typically with ENOTTY); the message names the path.</exception>
    /// <exception cref="NotSupportedException">The node is a V4L2 node without single-planar video capture or streaming.</exception>
    public static V4l2Device Open(string path, ImportCache? imports = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        SafeFdHandle fd = Interop.CheckFd(
            Interop.Libc.open(path, Interop.Libc.O_RDWR | Interop.Libc.O_NONBLOCK | Interop.Libc.O_CLOEXEC, 0), "open", path);
        try
        {
            V4l2Capability capability = QueryCapability(fd, path);
            if (!IsStreamingCapture(capability))
            {
                throw new NotSupportedException(
                    $"{path} ({capability.Driver}, '{capability.Card}') is a V4L2 node without single-planar video capture " +
                    $"and streaming I/O; it offers {capability.NodeCaps}.");
            }

            return new V4l2Device(path, fd, capability, imports ?? ImportCache.Shared);
        }
        catch
        {
            fd.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Opens the first video node (<c>/dev/video*</c>, in number order) whose driver is <paramref name="driverName"/>
    /// and that offers single-planar video capture (<c>V4L2_CAP_VIDEO_CAPTURE</c> in its device caps) with streaming I/O.
    /// </summary>
    /// <param name="driverName">The driver's name as <c>VIDIOC_QUERYCAP</c> reports it, e.g. <c>vivid</c>.</param>
    /// <param name="features">What the machine has; probed when null.</param>
    /// <param name="imports">Where exported buffers are imported; <see cref="ImportCache.Shared"/> when null.</param>
    /// <exception cref="FeatureNotAvailableException">No node of that driver, or none of its nodes captures video.</exception>
    public static V4l2Device FindCapture(string driverName, LinuxFeatures? features = null, ImportCache? imports = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(driverName);
        features ??= LinuxFeatures.Probe();
        string first = features.RequireV4l2Driver(driverName);
        var seen = new List<string>();
        foreach (string node in features.V4l2DeviceNodes(driverName))
        {
            try
            {
                return Open(node, imports);
            }
            catch (Exception e) when (e is NotSupportedException or LinuxErrorException)
            {
                seen.Add($"{node}: {e.Message}");
            }
        }

        throw new FeatureNotAvailableException(
            $"No video node of V4L2 driver '{driverName}' offers single-planar video capture with streaming I/O " +
            $"(first node {first}). {string.Join(" ", seen)}");
    }

    /// <summary>The formats the capture queue offers (<c>VIDIOC_ENUM_FMT</c> until EINVAL).</summary>
    /// <exception cref="ObjectDisposedException">The device was disposed.</exception>
    /// <exception cref="LinuxErrorException">The driver failed otherwise.</exception>
    public unsafe IReadOnlyList<V4l2FmtDesc> EnumerateFormats()
    {
        ThrowIfDisposed();
        var formats = new List<V4l2FmtDesc>();
        for (uint index = 0; ; index++)
        {
            var desc = new Interop.Libc.v4l2_fmtdesc { index = index, type = BufType };
            int errno = Interop.Libc.TryIoctl(_fd, Interop.Libc.VIDIOC_ENUM_FMT, &desc);
            if (errno == Interop.Libc.EINVAL)
            {
                return formats; // past the last one
            }

            if (errno != 0)
            {
                throw Interop.GetExceptionForErrno(errno, "ioctl(VIDIOC_ENUM_FMT)", $"{Path}, index {index}");
            }

            formats.Add(new V4l2FmtDesc(
                (int)desc.index, new V4l2FourCC(desc.pixelformat), Interop.Libc.CString(desc.description, 32), desc.flags));
        }
    }

    /// <summary>The capture queue's current format (<c>VIDIOC_G_FMT</c>).</summary>
    /// <exception cref="ObjectDisposedException">The device was disposed.</exception>
    /// <exception cref="LinuxErrorException">The driver refused.</exception>
    public unsafe V4l2PixFormat GetFormat()
    {
        ThrowIfDisposed();
        var format = new Interop.Libc.v4l2_format { type = BufType };
        Interop.Libc.Ioctl(_fd, Interop.Libc.VIDIOC_G_FMT, &format, "ioctl(VIDIOC_G_FMT)", Path);
        return FromNative(format.fmt.pix);
    }

    /// <summary>
    /// Asks for <paramref name="format"/> (<c>VIDIOC_S_FMT</c>) and returns what the driver will produce: it adjusts what
    /// it cannot do (another size, another code), so check the result. Refused by the kernel (EBUSY) while buffers are allocated.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A size is negative.</exception>
    /// <exception cref="ObjectDisposedException">The device was disposed.</exception>
    /// <exception cref="LinuxErrorException">The driver refused.</exception>
    public unsafe V4l2PixFormat SetFormat(V4l2PixFormat format)
    {
        ArgumentNullException.ThrowIfNull(format);
        ArgumentOutOfRangeException.ThrowIfNegative(format.Width);
        ArgumentOutOfRangeException.ThrowIfNegative(format.Height);
        ArgumentOutOfRangeException.ThrowIfNegative(format.BytesPerLine);
        ArgumentOutOfRangeException.ThrowIfNegative(format.SizeImage);
        ThrowIfDisposed();
        var native = new Interop.Libc.v4l2_format { type = BufType };
        native.fmt.pix = new Interop.Libc.v4l2_pix_format
        {
            width = (uint)format.Width,
            height = (uint)format.Height,
            pixelformat = format.PixelFormat.Value,
            field = (uint)format.Field,
            bytesperline = (uint)format.BytesPerLine,
            sizeimage = (uint)format.SizeImage,
            colorspace = format.Colorspace,
            ycbcr_enc = format.YcbcrEnc,
            quantization = format.Quantization,
            xfer_func = format.XferFunc,
        };
        Interop.Libc.Ioctl(_fd, Interop.Libc.VIDIOC_S_FMT, &native, "ioctl(VIDIOC_S_FMT)", $"{Path}, {Describe(format)}");
        return FromNative(native.fmt.pix);
    }

    /// <summary>
    /// Allocates (<see cref="V4l2Memory.Mmap"/>) or prepares (<see cref="V4l2Memory.DmaBuf"/>) <paramref name="count"/>
    /// buffers (<c>VIDIOC_REQBUFS</c>) and returns how many the driver granted, which may be more or fewer; 0 frees them.
    /// Any buffers of an earlier request are given back first: the device drops its references to queued dma-bufs, and
    /// exporting an index again makes a new export. Refused by the kernel (EBUSY) while streaming.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="count"/> is negative or <paramref name="memory"/> unknown.</exception>
    /// <exception cref="ObjectDisposedException">The device was disposed.</exception>
    /// <exception cref="LinuxErrorException">The driver refused (e.g. EINVAL for a memory type it does not support).</exception>
    public unsafe int RequestBuffers(int count, V4l2Memory memory)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (memory is not (V4l2Memory.Mmap or V4l2Memory.DmaBuf))
        {
            throw new ArgumentOutOfRangeException(nameof(memory), memory, "Only MMAP and DMABUF buffers are supported.");
        }

        lock (_lock)
        {
            ThrowIfDisposed();
            var request = new Interop.Libc.v4l2_requestbuffers { count = (uint)count, type = BufType, memory = (uint)memory };
            Interop.Libc.Ioctl(_fd, Interop.Libc.VIDIOC_REQBUFS, &request, "ioctl(VIDIOC_REQBUFS)", $"{Path}, {count} {memory} buffers");
            DropHeld(); // the kernel gave back (cancelled) every buffer of the old request
            int granted = (int)request.count;
            _memory = granted == 0 ? null : memory;
            _queued = new bool[granted];
            _held = new DmaBufHandle?[granted];
            _exported = new DmaBuffer?[granted];
            return granted;
        }
    }

    /// <summary>
    /// Queues buffer <paramref name="index"/> of a <see cref="V4l2Memory.DmaBuf"/> queue with <paramref name="buffer"/>
    /// as its memory (<c>VIDIOC_QBUF</c>). The device takes a reference of its own, so the caller may dispose its
    /// handle; the reference comes back with the buffer from <see cref="Dequeue"/>, or is dropped by
    /// <see cref="StreamOff"/>, <see cref="RequestBuffers"/> and <see cref="Dispose"/>. The kernel checks the size: a
    /// dma-buf smaller than the format's <c>sizeimage</c> is refused with EINVAL.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is not below <see cref="BufferCount"/>.</exception>
    /// <exception cref="ArgumentException"><paramref name="buffer"/> is not a Linux dma-buf (a memfd is not one).</exception>
    /// <exception cref="InvalidOperationException">The queue is not a DMABUF queue, or the buffer is already queued.</exception>
    /// <exception cref="ObjectDisposedException">The device or the handle was disposed.</exception>
    /// <exception cref="LinuxErrorException">The kernel refused (the message names VIDIOC_QBUF and the errno).</exception>
    public unsafe void QueueDmaBuf(int index, DmaBufHandle buffer)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        LinuxBuffer linux = buffer.Buffer.GetLinuxBuffer();
        if (linux.Kind != LinuxBufferKind.DmaBuf)
        {
            throw new ArgumentException(
                $"{buffer.Buffer} is a {linux.Kind}, not a dma-buf; V4L2 imports only dma-bufs.", nameof(buffer));
        }

        lock (_lock)
        {
            CheckQueueable(index, V4l2Memory.DmaBuf);
            DmaBufHandle held = buffer.Duplicate();
            try
            {
                var native = new Interop.Libc.v4l2_buffer
                {
                    index = (uint)index,
                    type = BufType,
                    memory = Interop.Libc.V4L2_MEMORY_DMABUF,
                    length = (uint)Math.Min(linux.FileSize, uint.MaxValue),
                };
                bool added = false;
                try
                {
                    linux.Fd.DangerousAddRef(ref added);
                    native.m.fd = (int)linux.Fd.DangerousGetHandle();
                    Interop.Libc.Ioctl(
                        _fd, Interop.Libc.VIDIOC_QBUF, &native, "ioctl(VIDIOC_QBUF)",
                        $"{Path}, buffer {index}: dma-buf {buffer.Buffer.Id} of {linux.FileSize} bytes");
                }
                finally
                {
                    if (added)
                    {
                        linux.Fd.DangerousRelease();
                    }
                }
            }
            catch
            {
                held.Dispose();
                throw;
            }

            _held[index] = held;
            MarkQueued(index);
        }
    }

    /// <summary>Queues buffer <paramref name="index"/> of a <see cref="V4l2Memory.Mmap"/> queue (<c>VIDIOC_QBUF</c>).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is not below <see cref="BufferCount"/>.</exception>
    /// <exception cref="InvalidOperationException">The queue is not an MMAP queue, or the buffer is already queued.</exception>
    /// <exception cref="ObjectDisposedException">The device was disposed.</exception>
    /// <exception cref="LinuxErrorException">The kernel refused.</exception>
    public unsafe void QueueMmap(int index)
    {
        lock (_lock)
        {
            CheckQueueable(index, V4l2Memory.Mmap);
            var native = new Interop.Libc.v4l2_buffer { index = (uint)index, type = BufType, memory = Interop.Libc.V4L2_MEMORY_MMAP };
            Interop.Libc.Ioctl(_fd, Interop.Libc.VIDIOC_QBUF, &native, "ioctl(VIDIOC_QBUF)", $"{Path}, buffer {index}");
            MarkQueued(index);
        }
    }

    /// <summary>Starts streaming (<c>VIDIOC_STREAMON</c>): the device fills queued buffers in order.</summary>
    /// <exception cref="ObjectDisposedException">The device was disposed.</exception>
    /// <exception cref="LinuxErrorException">The kernel refused (e.g. EINVAL with no buffers requested).</exception>
    public unsafe void StreamOn()
    {
        lock (_lock)
        {
            ThrowIfDisposed();
            int type = (int)BufType;
            Interop.Libc.Ioctl(_fd, Interop.Libc.VIDIOC_STREAMON, &type, "ioctl(VIDIOC_STREAMON)", Path);
            _streaming = true;
        }
    }

    /// <summary>
    /// Stops streaming (<c>VIDIOC_STREAMOFF</c>): the kernel takes every buffer off the queue, done or not, and the
    /// device drops its references to the dma-bufs that were queued. Also allowed when not streaming (it then just
    /// empties the queue).
    /// </summary>
    /// <exception cref="ObjectDisposedException">The device was disposed.</exception>
    /// <exception cref="LinuxErrorException">The kernel refused.</exception>
    public unsafe void StreamOff()
    {
        lock (_lock)
        {
            ThrowIfDisposed();
            int type = (int)BufType;
            Interop.Libc.Ioctl(_fd, Interop.Libc.VIDIOC_STREAMOFF, &type, "ioctl(VIDIOC_STREAMOFF)", Path);
            _streaming = false;
            DropHeld();
        }
    }

    /// <summary>
    /// Waits up to <paramref name="timeout"/> for the device to finish a buffer (<c>poll</c>) and dequeues it
    /// (<c>VIDIOC_DQBUF</c>). For a DMABUF queue the result carries the dma-buf; dispose the result (or queue its
    /// buffer again first) when done with it.
    /// </summary>
    /// <param name="timeout">How long to wait; <see cref="Timeout.InfiniteTimeSpan"/> waits for ever.</param>
    /// <exception cref="InvalidOperationException">Not streaming, or no buffer is queued: nothing could come.</exception>
    /// <exception cref="TimeoutException">No buffer was done within <paramref name="timeout"/>.</exception>
    /// <exception cref="ObjectDisposedException">The device was disposed.</exception>
    /// <exception cref="LinuxErrorException">The kernel reported an error (e.g. EIO after a device error).</exception>
    public unsafe V4l2Buffer Dequeue(TimeSpan timeout)
    {
        if (timeout < TimeSpan.Zero && timeout != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentOutOfRangeException(nameof(timeout), timeout, "A timeout is not negative, except Timeout.InfiniteTimeSpan.");
        }

        var clock = Stopwatch.StartNew();
        while (true)
        {
            lock (_lock)
            {
                ThrowIfDisposed();
                if (!_streaming || _queuedCount == 0)
                {
                    throw new InvalidOperationException(
                        $"{Path}: nothing can be dequeued: {(_streaming ? "no buffer is queued" : "the queue is not streaming (StreamOn first)")}.");
                }
            }

            int waitMs;
            if (timeout == Timeout.InfiniteTimeSpan)
            {
                waitMs = -1;
            }
            else
            {
                TimeSpan left = timeout - clock.Elapsed;
                waitMs = left <= TimeSpan.Zero ? 0 : (int)Math.Min(Math.Ceiling(left.TotalMilliseconds), int.MaxValue);
            }

            short revents = Interop.Libc.Poll(_fd, Interop.Libc.POLLIN, waitMs);
            if (revents == 0)
            {
                if (waitMs == 0 || (timeout != Timeout.InfiniteTimeSpan && clock.Elapsed >= timeout))
                {
                    throw new TimeoutException($"{Path}: no buffer was done within {timeout.TotalMilliseconds:F0} ms ({QueuedCount} queued).");
                }

                continue;
            }

            lock (_lock)
            {
                ThrowIfDisposed();
                var native = new Interop.Libc.v4l2_buffer { type = BufType, memory = (uint)(_memory ?? V4l2Memory.Mmap) };
                int errno = Interop.Libc.TryIoctl(_fd, Interop.Libc.VIDIOC_DQBUF, &native);
                if (errno == Interop.Libc.EAGAIN)
                {
                    if ((revents & Interop.Libc.POLLERR) != 0)
                    {
                        throw new InvalidOperationException($"{Path}: the queue reports an error (POLLERR) and has no buffer done.");
                    }

                    continue; // another thread took it
                }

                if (errno != 0)
                {
                    throw Interop.GetExceptionForErrno(errno, "ioctl(VIDIOC_DQBUF)", Path);
                }

                return TakeDequeued(native);
            }
        }
    }

    /// <summary>
    /// Exports buffer <paramref name="index"/> of an <see cref="V4l2Memory.Mmap"/> queue as a dma-buf
    /// (<c>VIDIOC_EXPBUF</c>, read-write) and imports it (<see cref="ImportCache"/>), returning a new reference. The
    /// kernel makes a new dma-buf for every <c>VIDIOC_EXPBUF</c> call; this device remembers its export of each index, so
    /// exporting an index again while the buffer lives returns the same <see cref="DmaBuffer"/>. The buffer stays valid
    /// after the queue's buffers are freed (the dma-buf keeps the memory).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is not below <see cref="BufferCount"/>.</exception>
    /// <exception cref="InvalidOperationException">The queue is not an MMAP queue.</exception>
    /// <exception cref="ObjectDisposedException">The device was disposed.</exception>
    /// <exception cref="LinuxErrorException">The kernel refused.</exception>
    /// <exception cref="BufferImportException">The exported descriptor failed the import checks.</exception>
    public unsafe DmaBufHandle ExportBuffer(int index)
    {
        lock (_lock)
        {
            CheckIndex(index, V4l2Memory.Mmap, "exported");
            if (_exported[index]?.TryAddReference() is { } again)
            {
                return again;
            }

            var query = new Interop.Libc.v4l2_buffer { index = (uint)index, type = BufType, memory = Interop.Libc.V4L2_MEMORY_MMAP };
            Interop.Libc.Ioctl(_fd, Interop.Libc.VIDIOC_QUERYBUF, &query, "ioctl(VIDIOC_QUERYBUF)", $"{Path}, buffer {index}");
            var export = new Interop.Libc.v4l2_exportbuffer
            {
                type = BufType,
                index = (uint)index,
                flags = Interop.Libc.O_RDWR | Interop.Libc.O_CLOEXEC,
            };
            Interop.Libc.Ioctl(_fd, Interop.Libc.VIDIOC_EXPBUF, &export, "ioctl(VIDIOC_EXPBUF)", $"{Path}, buffer {index}");
#pragma warning disable CA2000 // Import takes the descriptor over, also when it refuses it
            DmaBufHandle handle = _imports.Import(new SafeFdHandle(export.fd), query.length);
#pragma warning restore CA2000
            _exported[index] = handle.Buffer;
            return handle;
        }
    }

    /// <summary>
    /// Stops streaming, closes the node and drops the references to queued dma-bufs. Exported buffers stay valid.
    /// </summary>
    public unsafe void Dispose()
    {
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            if (_streaming || _queuedCount > 0)
            {
                // Before the references go: after STREAMOFF the device writes into none of the buffers.
                int type = (int)BufType;
                _ = Interop.Libc.TryIoctl(_fd, Interop.Libc.VIDIOC_STREAMOFF, &type);
                _streaming = false;
            }

            _fd.Dispose();
            DropHeld();
        }
    }

    /// <inheritdoc/>
    public override string ToString() => $"V4L2 device {Path} ({Capability.Driver}, '{Capability.Card}')";

    private static bool IsStreamingCapture(V4l2Capability capability) =>
        (capability.NodeCaps & (V4l2Caps.VideoCapture | V4l2Caps.Streaming)) == (V4l2Caps.VideoCapture | V4l2Caps.Streaming);

    private static unsafe V4l2Capability QueryCapability(SafeFdHandle fd, string path)
    {
        Interop.Libc.v4l2_capability cap;
        int errno = Interop.Libc.TryIoctl(fd, Interop.Libc.VIDIOC_QUERYCAP, &cap);
        if (errno != 0)
        {
            string why = errno is Interop.Libc.ENOTTY or Interop.Libc.EINVAL ? $"{path} is not a V4L2 device" : path;
            throw Interop.GetExceptionForErrno(errno, "ioctl(VIDIOC_QUERYCAP)", why);
        }

        return new V4l2Capability(
            Interop.Libc.CString(cap.driver, 16),
            Interop.Libc.CString(cap.card, 32),
            Interop.Libc.CString(cap.bus_info, 32),
            new Version((int)(cap.version >> 16), (int)((cap.version >> 8) & 0xff), (int)(cap.version & 0xff)),
            (V4l2Caps)cap.capabilities,
            (V4l2Caps)cap.device_caps);
    }

    private static V4l2PixFormat FromNative(in Interop.Libc.v4l2_pix_format pix) =>
        new((int)pix.width, (int)pix.height, new V4l2FourCC(pix.pixelformat), (V4l2Field)pix.field)
        {
            BytesPerLine = (int)pix.bytesperline,
            SizeImage = (int)pix.sizeimage,
            Colorspace = pix.colorspace,
            YcbcrEnc = pix.ycbcr_enc,
            Quantization = pix.quantization,
            XferFunc = pix.xfer_func,
        };

    private static string Describe(V4l2PixFormat format) => $"{format.Width}x{format.Height} {format.PixelFormat} {format.Field}";

    private V4l2Buffer TakeDequeued(in Interop.Libc.v4l2_buffer native)
    {
        int index = (int)native.index;
        DmaBufHandle? held = null;
        if (index < _queued.Length)
        {
            held = _held[index];
            _held[index] = null;
            if (_queued[index])
            {
                _queued[index] = false;
                _queuedCount--;
            }
        }

        var timestamp = TimeSpan.FromTicks((native.timestamp.tv_sec * TimeSpan.TicksPerSecond) + (native.timestamp.tv_usec * TimeSpan.TicksPerMicrosecond));
        return new V4l2Buffer(
            index, (V4l2Memory)native.memory, (int)native.bytesused, native.sequence, timestamp, (V4l2BufferFlags)native.flags, (V4l2Field)native.field, held);
    }

    private void CheckQueueable(int index, V4l2Memory memory)
    {
        CheckIndex(index, memory, "queued");
        if (_queued[index])
        {
            throw new InvalidOperationException($"{Path}: buffer {index} is already queued; dequeue it first.");
        }
    }

    private void CheckIndex(int index, V4l2Memory memory, string what)
    {
        ThrowIfDisposed();
        if (_memory != memory)
        {
            throw new InvalidOperationException(_memory is null
                ? $"{Path}: no buffers are requested; call RequestBuffers(count, V4l2Memory.{memory}) first."
                : $"{Path}: the buffers were requested as {_memory}; only {memory} buffers can be {what} this way.");
        }

        if ((uint)index >= (uint)_queued.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(index), index, $"{Path} granted {_queued.Length} buffers (indices 0 to {_queued.Length - 1}).");
        }
    }

    private void MarkQueued(int index)
    {
        _queued[index] = true;
        _queuedCount++;
    }

    /// <summary>Forgets every queued buffer and drops the references held for them. Call under the lock.</summary>
    private void DropHeld()
    {
        for (int i = 0; i < _held.Length; i++)
        {
            _held[i]?.Dispose();
            _held[i] = null;
            _queued[i] = false;
        }

        _queuedCount = 0;
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);
}

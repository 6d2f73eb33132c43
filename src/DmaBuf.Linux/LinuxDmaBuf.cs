using System.Text;

namespace DmaBuf.Linux;

/// <summary>Linux-specific operations on framework buffers: CPU mappings in place, kernel names, the backing descriptor.</summary>
public static class LinuxDmaBuf
{
    /// <summary>The Linux side of <paramref name="buffer"/>.</summary>
    /// <exception cref="ArgumentException">The buffer is not backed by a Linux descriptor.</exception>
    public static LinuxBuffer GetLinuxBuffer(this DmaBuffer buffer)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        return buffer.ExporterPrivate as LinuxBuffer
            ?? throw new ArgumentException($"{buffer} is not backed by a Linux descriptor (exporter '{buffer.ExporterName}').", nameof(buffer));
    }

    /// <summary>Whether <paramref name="buffer"/> is backed by a Linux descriptor.</summary>
    public static bool IsLinuxBuffer(this DmaBuffer buffer) => buffer?.ExporterPrivate is LinuxBuffer;

    /// <summary>
    /// Maps the buffer for the CPU through its mmap cache (a hit when it is already mapped in this process) and returns
    /// a lease on the bytes in place. The lease holds its own reference to the buffer; dispose it when done.
    /// </summary>
    /// <exception cref="ArgumentException">The buffer is not backed by a Linux descriptor.</exception>
    /// <exception cref="ObjectDisposedException">The handle was disposed.</exception>
    /// <exception cref="LinuxErrorException">mmap failed.</exception>
    public static CpuMapping MapCpu(this DmaBufHandle handle)
    {
        ArgumentNullException.ThrowIfNull(handle);
        LinuxBuffer linux = handle.Buffer.GetLinuxBuffer();
        DmaBufHandle reference = handle.Duplicate();
        try
        {
            return linux.Cache.Acquire(linux, reference);
        }
        catch
        {
            reference.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Names the buffer: <see cref="DmaBuffer.Name"/>, and on a dma-buf also the kernel's name
    /// (<c>DMA_BUF_SET_NAME</c>, shown in <c>/proc/&lt;pid&gt;/fdinfo</c> and debugfs). A memfd's kernel name is fixed
    /// when it is created.
    /// </summary>
    /// <exception cref="ArgumentException">The name is invalid, or the buffer is not backed by a Linux descriptor.</exception>
    /// <exception cref="LinuxErrorException">The ioctl failed.</exception>
    public static void SetName(this DmaBufHandle handle, string? name)
    {
        ArgumentNullException.ThrowIfNull(handle);
        DmaBuffer.ValidateName(name);
        LinuxBuffer linux = handle.Buffer.GetLinuxBuffer();
        if (linux.Kind == LinuxBufferKind.DmaBuf)
        {
            SetKernelName(linux.Fd, name ?? "");
        }

        handle.Buffer.Name = name;
    }

    /// <summary><c>DMA_BUF_SET_NAME</c> on a dma-buf descriptor.</summary>
    internal static unsafe void SetKernelName(SafeFdHandle fd, string name)
    {
        byte[] bytes = new byte[Encoding.UTF8.GetByteCount(name) + 1];
        Encoding.UTF8.GetBytes(name, bytes);
        fixed (byte* p = bytes)
        {
            Interop.Libc.Ioctl(fd, Interop.Libc.DMA_BUF_SET_NAME_B, p, "ioctl(DMA_BUF_SET_NAME)");
        }
    }
}

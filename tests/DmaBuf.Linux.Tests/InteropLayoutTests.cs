using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using static Interop.Libc;

namespace DmaBuf.Linux.Tests;

/// <summary>
/// Struct layouts and constants of the interop, checked against the machine's C headers: a tiny C program compiled with
/// gcc prints sizeof/offsetof and the constants, and every value must equal ours (as Tmds.LibC does).
/// </summary>
public sealed class InteropLayoutTests
{
    // When the dma-buf, dma-heap or udmabuf uapi headers are absent, the program defines the same structs and ioctl
    // numbers from their documented _IOW/_IOWR encodings and says so in a '#' line. linux/videodev2.h is in every
    // linux-libc-dev, so the V4L2 values always come from the header. Members of a union or struct inside a struct are
    // printed with their path (offsetof(v4l2_format.fmt.pix)).
    private const string Program = """
        #define _GNU_SOURCE
        #include <stdio.h>
        #include <stddef.h>
        #include <errno.h>
        #include <fcntl.h>
        #include <poll.h>
        #include <sys/ioctl.h>
        #include <sys/mman.h>
        #include <sys/socket.h>
        #include <sys/stat.h>
        #include <sys/un.h>
        #include <linux/types.h>
        #include <linux/memfd.h>
        #include <linux/magic.h>
        #include <sys/vfs.h>
        #include <linux/videodev2.h>
        #if __has_include(<linux/dma-buf.h>)
        #include <linux/dma-buf.h>
        #define DMA_BUF_SOURCE "kernel header linux/dma-buf.h"
        #else
        struct dma_buf_sync { __u64 flags; };
        #define DMA_BUF_SYNC_READ (1 << 0)
        #define DMA_BUF_SYNC_WRITE (2 << 0)
        #define DMA_BUF_SYNC_RW (DMA_BUF_SYNC_READ | DMA_BUF_SYNC_WRITE)
        #define DMA_BUF_SYNC_START (0 << 2)
        #define DMA_BUF_SYNC_END (1 << 2)
        #define DMA_BUF_NAME_LEN 32
        #define DMA_BUF_IOCTL_SYNC _IOW('b', 0, struct dma_buf_sync)
        #define DMA_BUF_SET_NAME_B _IOW('b', 1, __u64)
        #define DMA_BUF_SOURCE "documented encodings (linux/dma-buf.h absent)"
        #endif
        #ifndef DMA_BUF_IOCTL_EXPORT_SYNC_FILE
        struct dma_buf_export_sync_file { __u32 flags; __s32 fd; };
        struct dma_buf_import_sync_file { __u32 flags; __s32 fd; };
        #define DMA_BUF_IOCTL_EXPORT_SYNC_FILE _IOWR('b', 2, struct dma_buf_export_sync_file)
        #define DMA_BUF_IOCTL_IMPORT_SYNC_FILE _IOW('b', 3, struct dma_buf_import_sync_file)
        #endif
        #if __has_include(<linux/sync_file.h>)
        #include <linux/sync_file.h>
        #else
        struct sync_merge_data { char name[32]; __s32 fd2; __s32 fence; __u32 flags; __u32 pad; };
        struct sync_fence_info { char obj_name[32]; char driver_name[32]; __s32 status; __u32 flags; __u64 timestamp_ns; };
        struct sync_file_info { char name[32]; __s32 status; __u32 flags; __u32 num_fences; __u32 pad; __u64 sync_fence_info; };
        #define SYNC_IOC_MERGE _IOWR('>', 3, struct sync_merge_data)
        #define SYNC_IOC_FILE_INFO _IOWR('>', 4, struct sync_file_info)
        #endif
        #if __has_include(<drm/vgem_drm.h>)
        #include <drm/vgem_drm.h>
        #else
        struct drm_vgem_fence_attach { __u32 handle; __u32 flags; __u32 out_fence; __u32 pad; };
        struct drm_vgem_fence_signal { __u32 fence; __u32 flags; };
        #define VGEM_FENCE_WRITE 0x1
        #define DRM_IOCTL_VGEM_FENCE_ATTACH _IOWR('d', 0x40 + 0x1, struct drm_vgem_fence_attach)
        #define DRM_IOCTL_VGEM_FENCE_SIGNAL _IOW('d', 0x40 + 0x2, struct drm_vgem_fence_signal)
        #endif
        #if __has_include(<linux/dma-heap.h>)
        #include <linux/dma-heap.h>
        #define DMA_HEAP_SOURCE "kernel header linux/dma-heap.h"
        #else
        struct dma_heap_allocation_data { __u64 len; __u32 fd; __u32 fd_flags; __u64 heap_flags; };
        #define DMA_HEAP_IOCTL_ALLOC _IOWR('H', 0x0, struct dma_heap_allocation_data)
        #define DMA_HEAP_SOURCE "documented encodings (linux/dma-heap.h absent)"
        #endif
        #if __has_include(<linux/udmabuf.h>)
        #include <linux/udmabuf.h>
        #define UDMABUF_SOURCE "kernel header linux/udmabuf.h"
        #else
        struct udmabuf_create { __u32 memfd; __u32 flags; __u64 offset; __u64 size; };
        struct udmabuf_create_item { __u32 memfd; __u32 __pad; __u64 offset; __u64 size; };
        struct udmabuf_create_list { __u32 flags; __u32 count; struct udmabuf_create_item list[]; };
        #define UDMABUF_FLAGS_CLOEXEC 0x01
        #define UDMABUF_CREATE _IOW('u', 0x42, struct udmabuf_create)
        #define UDMABUF_CREATE_LIST _IOW('u', 0x43, struct udmabuf_create_list)
        #define UDMABUF_SOURCE "documented encodings (linux/udmabuf.h absent)"
        #endif
        #if __has_include(<drm/drm.h>) && __has_include(<drm/drm_mode.h>)
        #include <drm/drm.h>
        #include <drm/drm_mode.h>
        #define DRM_SOURCE "kernel headers drm/drm.h, drm/drm_mode.h"
        #else
        struct drm_version { int version_major; int version_minor; int version_patchlevel; __kernel_size_t name_len;
            char *name; __kernel_size_t date_len; char *date; __kernel_size_t desc_len; char *desc; };
        struct drm_gem_close { __u32 handle; __u32 pad; };
        struct drm_prime_handle { __u32 handle; __u32 flags; __s32 fd; };
        struct drm_mode_create_dumb { __u32 height; __u32 width; __u32 bpp; __u32 flags; __u32 handle; __u32 pitch;
            __u64 size; };
        #define DRM_CLOEXEC O_CLOEXEC
        #define DRM_RDWR O_RDWR
        #define DRM_IOCTL_VERSION _IOWR('d', 0x00, struct drm_version)
        #define DRM_IOCTL_GEM_CLOSE _IOW('d', 0x09, struct drm_gem_close)
        #define DRM_IOCTL_PRIME_HANDLE_TO_FD _IOWR('d', 0x2d, struct drm_prime_handle)
        #define DRM_IOCTL_PRIME_FD_TO_HANDLE _IOWR('d', 0x2e, struct drm_prime_handle)
        #define DRM_IOCTL_MODE_CREATE_DUMB _IOWR('d', 0xB2, struct drm_mode_create_dumb)
        #define DRM_SOURCE "documented encodings (drm/drm.h absent)"
        #endif
        #define P(n) printf("%s %lld\n", #n, (long long)(n));
        #define SZ(t) printf("sizeof(%s) %zu\n", #t, sizeof(struct t));
        #define OFF(t, f) printf("offsetof(%s.%s) %zu\n", #t, #f, offsetof(struct t, f));
        int main(void) {
            printf("# dma-buf: %s\n# dma-heap: %s\n# udmabuf: %s\n# drm: %s\n", DMA_BUF_SOURCE, DMA_HEAP_SOURCE, UDMABUF_SOURCE,
                DRM_SOURCE);
            SZ(msghdr) OFF(msghdr, msg_name) OFF(msghdr, msg_namelen) OFF(msghdr, msg_iov) OFF(msghdr, msg_iovlen)
            OFF(msghdr, msg_control) OFF(msghdr, msg_controllen) OFF(msghdr, msg_flags)
            SZ(cmsghdr) OFF(cmsghdr, cmsg_len) OFF(cmsghdr, cmsg_level) OFF(cmsghdr, cmsg_type)
            P(CMSG_LEN(0)) P(CMSG_SPACE(sizeof(int))) P(CMSG_SPACE(4 * sizeof(int)))
            SZ(iovec) OFF(iovec, iov_base) OFF(iovec, iov_len)
            SZ(ucred) OFF(ucred, pid) OFF(ucred, uid) OFF(ucred, gid)
            SZ(sockaddr_un) OFF(sockaddr_un, sun_family) OFF(sockaddr_un, sun_path)
            SZ(pollfd) OFF(pollfd, fd) OFF(pollfd, events) OFF(pollfd, revents)
            SZ(stat) OFF(stat, st_dev) OFF(stat, st_ino) OFF(stat, st_mode) OFF(stat, st_size)
            OFF(statfs, f_type) P(sizeof(((struct statfs *)0)->f_type)) P(TMPFS_MAGIC) P(HUGETLBFS_MAGIC) P(DMA_BUF_MAGIC)
            SZ(dma_buf_sync) OFF(dma_buf_sync, flags)
            SZ(dma_heap_allocation_data) OFF(dma_heap_allocation_data, len) OFF(dma_heap_allocation_data, fd)
            OFF(dma_heap_allocation_data, fd_flags) OFF(dma_heap_allocation_data, heap_flags)
            SZ(udmabuf_create) OFF(udmabuf_create, memfd) OFF(udmabuf_create, flags) OFF(udmabuf_create, offset)
            OFF(udmabuf_create, size)
            SZ(udmabuf_create_item) OFF(udmabuf_create_item, memfd) OFF(udmabuf_create_item, __pad)
            OFF(udmabuf_create_item, offset) OFF(udmabuf_create_item, size)
            SZ(udmabuf_create_list) OFF(udmabuf_create_list, flags) OFF(udmabuf_create_list, count)
            SZ(dma_buf_export_sync_file) OFF(dma_buf_export_sync_file, flags) OFF(dma_buf_export_sync_file, fd)
            SZ(dma_buf_import_sync_file) OFF(dma_buf_import_sync_file, flags) OFF(dma_buf_import_sync_file, fd)
            SZ(sync_merge_data) OFF(sync_merge_data, name) OFF(sync_merge_data, fd2) OFF(sync_merge_data, fence)
            OFF(sync_merge_data, flags) OFF(sync_merge_data, pad)
            SZ(sync_fence_info) OFF(sync_fence_info, obj_name) OFF(sync_fence_info, driver_name)
            OFF(sync_fence_info, status) OFF(sync_fence_info, flags) OFF(sync_fence_info, timestamp_ns)
            SZ(sync_file_info) OFF(sync_file_info, name) OFF(sync_file_info, status) OFF(sync_file_info, flags)
            OFF(sync_file_info, num_fences) OFF(sync_file_info, pad) OFF(sync_file_info, sync_fence_info)
            SZ(drm_vgem_fence_attach) OFF(drm_vgem_fence_attach, handle) OFF(drm_vgem_fence_attach, flags)
            OFF(drm_vgem_fence_attach, out_fence) OFF(drm_vgem_fence_attach, pad)
            SZ(drm_vgem_fence_signal) OFF(drm_vgem_fence_signal, fence) OFF(drm_vgem_fence_signal, flags)
            P(DMA_BUF_IOCTL_EXPORT_SYNC_FILE) P(DMA_BUF_IOCTL_IMPORT_SYNC_FILE) P(SYNC_IOC_MERGE) P(SYNC_IOC_FILE_INFO)
            P(UDMABUF_CREATE_LIST) P(VGEM_FENCE_WRITE) P(DRM_IOCTL_VGEM_FENCE_ATTACH) P(DRM_IOCTL_VGEM_FENCE_SIGNAL)
            SZ(drm_version) OFF(drm_version, version_major) OFF(drm_version, version_minor)
            OFF(drm_version, version_patchlevel) OFF(drm_version, name_len) OFF(drm_version, name)
            OFF(drm_version, date_len) OFF(drm_version, date) OFF(drm_version, desc_len) OFF(drm_version, desc)
            SZ(drm_gem_close) OFF(drm_gem_close, handle) OFF(drm_gem_close, pad)
            SZ(drm_prime_handle) OFF(drm_prime_handle, handle) OFF(drm_prime_handle, flags) OFF(drm_prime_handle, fd)
            SZ(drm_mode_create_dumb) OFF(drm_mode_create_dumb, height) OFF(drm_mode_create_dumb, width)
            OFF(drm_mode_create_dumb, bpp) OFF(drm_mode_create_dumb, flags) OFF(drm_mode_create_dumb, handle)
            OFF(drm_mode_create_dumb, pitch) OFF(drm_mode_create_dumb, size)
            P(DRM_CLOEXEC) P(DRM_RDWR) P(DRM_IOCTL_VERSION) P(DRM_IOCTL_GEM_CLOSE) P(DRM_IOCTL_PRIME_HANDLE_TO_FD)
            P(DRM_IOCTL_PRIME_FD_TO_HANDLE) P(DRM_IOCTL_MODE_CREATE_DUMB)
            P(MFD_CLOEXEC) P(MFD_ALLOW_SEALING)
            P(F_ADD_SEALS) P(F_GET_SEALS) P(F_SEAL_SEAL) P(F_SEAL_SHRINK) P(F_SEAL_GROW) P(F_SEAL_WRITE)
            P(F_GETFD) P(F_GETFL) P(F_DUPFD_CLOEXEC) P(FD_CLOEXEC) P(O_RDONLY) P(O_RDWR) P(O_CLOEXEC) P(O_ACCMODE)
            P(AF_UNIX) P(SOCK_STREAM) P(SOCK_SEQPACKET) P(SOCK_CLOEXEC) P(SOL_SOCKET) P(SO_PEERCRED) P(SCM_RIGHTS)
            P(MSG_CTRUNC) P(MSG_TRUNC) P(MSG_DONTWAIT) P(MSG_NOSIGNAL) P(MSG_CMSG_CLOEXEC) P(SHUT_RDWR)
            P(PROT_READ) P(PROT_WRITE) P(MAP_SHARED) P(MAP_POPULATE)
            P(S_IFMT) P(S_IFREG) P(S_IFIFO) P(S_IFSOCK) P(POLLIN) P(POLLOUT) P(POLLRDHUP) P(POLLERR) P(POLLHUP)
            P(DMA_BUF_IOCTL_SYNC) P(DMA_BUF_SET_NAME_B) P(DMA_BUF_SYNC_READ) P(DMA_BUF_SYNC_WRITE) P(DMA_BUF_SYNC_RW)
            P(DMA_BUF_SYNC_START) P(DMA_BUF_SYNC_END) P(DMA_BUF_NAME_LEN)
            P(DMA_HEAP_IOCTL_ALLOC) P(UDMABUF_CREATE) P(UDMABUF_FLAGS_CLOEXEC)
            SZ(v4l2_capability) OFF(v4l2_capability, driver) OFF(v4l2_capability, card) OFF(v4l2_capability, bus_info)
            OFF(v4l2_capability, version) OFF(v4l2_capability, capabilities) OFF(v4l2_capability, device_caps)
            OFF(v4l2_capability, reserved)
            SZ(v4l2_fmtdesc) OFF(v4l2_fmtdesc, index) OFF(v4l2_fmtdesc, type) OFF(v4l2_fmtdesc, flags)
            OFF(v4l2_fmtdesc, description) OFF(v4l2_fmtdesc, pixelformat) OFF(v4l2_fmtdesc, mbus_code)
            OFF(v4l2_fmtdesc, reserved)
            SZ(v4l2_pix_format) OFF(v4l2_pix_format, width) OFF(v4l2_pix_format, height) OFF(v4l2_pix_format, pixelformat)
            OFF(v4l2_pix_format, field) OFF(v4l2_pix_format, bytesperline) OFF(v4l2_pix_format, sizeimage)
            OFF(v4l2_pix_format, colorspace) OFF(v4l2_pix_format, priv) OFF(v4l2_pix_format, flags)
            OFF(v4l2_pix_format, ycbcr_enc) OFF(v4l2_pix_format, quantization) OFF(v4l2_pix_format, xfer_func)
            SZ(v4l2_format) OFF(v4l2_format, type) OFF(v4l2_format, fmt) OFF(v4l2_format, fmt.pix)
            OFF(v4l2_format, fmt.raw_data) P(sizeof(((struct v4l2_format *)0)->fmt))
            SZ(v4l2_requestbuffers) OFF(v4l2_requestbuffers, count) OFF(v4l2_requestbuffers, type)
            OFF(v4l2_requestbuffers, memory) OFF(v4l2_requestbuffers, capabilities) OFF(v4l2_requestbuffers, flags)
            OFF(v4l2_requestbuffers, reserved)
            SZ(v4l2_timecode) OFF(v4l2_timecode, type) OFF(v4l2_timecode, flags) OFF(v4l2_timecode, frames)
            OFF(v4l2_timecode, seconds) OFF(v4l2_timecode, minutes) OFF(v4l2_timecode, hours) OFF(v4l2_timecode, userbits)
            SZ(timeval) OFF(timeval, tv_sec) OFF(timeval, tv_usec)
            SZ(v4l2_buffer) OFF(v4l2_buffer, index) OFF(v4l2_buffer, type) OFF(v4l2_buffer, bytesused)
            OFF(v4l2_buffer, flags) OFF(v4l2_buffer, field) OFF(v4l2_buffer, timestamp) OFF(v4l2_buffer, timecode)
            OFF(v4l2_buffer, sequence) OFF(v4l2_buffer, memory) OFF(v4l2_buffer, m) OFF(v4l2_buffer, m.offset)
            OFF(v4l2_buffer, m.userptr) OFF(v4l2_buffer, m.planes) OFF(v4l2_buffer, m.fd) OFF(v4l2_buffer, length)
            OFF(v4l2_buffer, reserved2) OFF(v4l2_buffer, request_fd) P(sizeof(((struct v4l2_buffer *)0)->m))
            SZ(v4l2_exportbuffer) OFF(v4l2_exportbuffer, type) OFF(v4l2_exportbuffer, index) OFF(v4l2_exportbuffer, plane)
            OFF(v4l2_exportbuffer, flags) OFF(v4l2_exportbuffer, fd) OFF(v4l2_exportbuffer, reserved)
            P(VIDIOC_QUERYCAP) P(VIDIOC_ENUM_FMT) P(VIDIOC_G_FMT) P(VIDIOC_S_FMT) P(VIDIOC_REQBUFS) P(VIDIOC_QUERYBUF)
            P(VIDIOC_QBUF) P(VIDIOC_EXPBUF) P(VIDIOC_DQBUF) P(VIDIOC_STREAMON) P(VIDIOC_STREAMOFF)
            P(V4L2_BUF_TYPE_VIDEO_CAPTURE) P(V4L2_MEMORY_MMAP) P(V4L2_MEMORY_USERPTR) P(V4L2_MEMORY_OVERLAY)
            P(V4L2_MEMORY_DMABUF) P(V4L2_PIX_FMT_YUYV) P(V4L2_FMT_FLAG_COMPRESSED) P(V4L2_FMT_FLAG_EMULATED)
            P(V4L2_CAP_VIDEO_CAPTURE) P(V4L2_CAP_VIDEO_OUTPUT) P(V4L2_CAP_VIDEO_OVERLAY) P(V4L2_CAP_VBI_CAPTURE)
            P(V4L2_CAP_VBI_OUTPUT) P(V4L2_CAP_SLICED_VBI_CAPTURE) P(V4L2_CAP_SLICED_VBI_OUTPUT) P(V4L2_CAP_RDS_CAPTURE)
            P(V4L2_CAP_VIDEO_OUTPUT_OVERLAY) P(V4L2_CAP_HW_FREQ_SEEK) P(V4L2_CAP_RDS_OUTPUT) P(V4L2_CAP_MODULATOR)
            P(V4L2_CAP_SDR_OUTPUT) P(V4L2_CAP_VIDEO_CAPTURE_MPLANE) P(V4L2_CAP_VIDEO_OUTPUT_MPLANE)
            P(V4L2_CAP_VIDEO_M2M_MPLANE) P(V4L2_CAP_VIDEO_M2M) P(V4L2_CAP_TUNER) P(V4L2_CAP_AUDIO) P(V4L2_CAP_RADIO)
            P(V4L2_CAP_SDR_CAPTURE) P(V4L2_CAP_EXT_PIX_FORMAT) P(V4L2_CAP_META_CAPTURE) P(V4L2_CAP_READWRITE)
            P(V4L2_CAP_STREAMING) P(V4L2_CAP_META_OUTPUT) P(V4L2_CAP_TOUCH) P(V4L2_CAP_IO_MC) P(V4L2_CAP_DEVICE_CAPS)
            P(V4L2_FIELD_ANY) P(V4L2_FIELD_NONE) P(V4L2_FIELD_TOP) P(V4L2_FIELD_BOTTOM) P(V4L2_FIELD_INTERLACED)
            P(V4L2_FIELD_SEQ_TB) P(V4L2_FIELD_SEQ_BT) P(V4L2_FIELD_ALTERNATE) P(V4L2_FIELD_INTERLACED_TB)
            P(V4L2_FIELD_INTERLACED_BT)
            P(V4L2_BUF_FLAG_MAPPED) P(V4L2_BUF_FLAG_QUEUED) P(V4L2_BUF_FLAG_DONE) P(V4L2_BUF_FLAG_ERROR)
            P(V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC) P(V4L2_BUF_FLAG_TIMESTAMP_COPY)
            P(V4L2_BUF_FLAG_LAST) P(O_NONBLOCK)
            P(EPERM) P(ENOENT) P(EINTR) P(EIO) P(EBADF) P(EAGAIN) P(ENOMEM) P(EACCES) P(EFAULT) P(EBUSY) P(EEXIST)
            P(ENODEV) P(EINVAL) P(ENFILE) P(EMFILE) P(ENOTTY) P(EFBIG) P(ENOSPC) P(EPIPE) P(ENOSYS) P(ENOTSOCK)
            P(EMSGSIZE) P(EOPNOTSUPP) P(EADDRINUSE) P(ECONNRESET) P(ENOTCONN) P(EBADFD) P(ETIMEDOUT) P(ECONNREFUSED)
            return 0;
        }
        """;

    private readonly ITestOutputHelper _output;

    public InteropLayoutTests(ITestOutputHelper output) => _output = output;

    [Fact]
    public void LayoutsAndConstants_MatchTheMachinesHeaders()
    {
        Dictionary<string, long> native = CompileAndRun();
        Dictionary<string, long> ours = Ours();
        var mismatches = new List<string>();
        foreach ((string name, long value) in ours)
        {
            if (!native.TryGetValue(name, out long expected))
            {
                mismatches.Add($"{name}: not printed by the C program");
            }
            else if (expected != value)
            {
                mismatches.Add($"{name}: C says {expected}, we say {value}");
            }
        }

        foreach (string name in native.Keys.Except(ours.Keys))
        {
            mismatches.Add($"{name}: printed by the C program but not checked on our side");
        }

        Assert.True(mismatches.Count == 0, "Interop differs from the headers:\n" + string.Join('\n', mismatches));
    }

    private static unsafe Dictionary<string, long> Ours()
    {
        StatLayout stat = StatLayout.Current;
        var d = new Dictionary<string, long>
        {
            ["CMSG_LEN(0)"] = CMSG_LEN(0),
            ["CMSG_SPACE(sizeof(int))"] = CMSG_SPACE(sizeof(int)),
            ["CMSG_SPACE(4 * sizeof(int))"] = CMSG_SPACE(4 * sizeof(int)),
            ["sizeof(stat)"] = stat.SizeOf,
            ["offsetof(stat.st_dev)"] = stat.st_dev,
            ["offsetof(stat.st_ino)"] = stat.st_ino,
            ["offsetof(stat.st_mode)"] = stat.st_mode,
            ["offsetof(stat.st_size)"] = stat.st_size,
            ["offsetof(statfs.f_type)"] = StatfsTypeOffset,
            ["sizeof(((struct statfs *)0)->f_type)"] = sizeof(long),
            ["TMPFS_MAGIC"] = TMPFS_MAGIC,
            ["HUGETLBFS_MAGIC"] = HUGETLBFS_MAGIC,
            ["DMA_BUF_MAGIC"] = DMA_BUF_MAGIC,
            ["MFD_CLOEXEC"] = MFD_CLOEXEC,
            ["MFD_ALLOW_SEALING"] = MFD_ALLOW_SEALING,
            ["F_ADD_SEALS"] = F_ADD_SEALS,
            ["F_GET_SEALS"] = F_GET_SEALS,
            ["F_SEAL_SEAL"] = F_SEAL_SEAL,
            ["F_SEAL_SHRINK"] = F_SEAL_SHRINK,
            ["F_SEAL_GROW"] = F_SEAL_GROW,
            ["F_SEAL_WRITE"] = F_SEAL_WRITE,
            ["F_GETFD"] = F_GETFD,
            ["F_GETFL"] = F_GETFL,
            ["F_DUPFD_CLOEXEC"] = F_DUPFD_CLOEXEC,
            ["FD_CLOEXEC"] = FD_CLOEXEC,
            ["O_RDONLY"] = O_RDONLY,
            ["O_RDWR"] = O_RDWR,
            ["O_CLOEXEC"] = O_CLOEXEC,
            ["O_ACCMODE"] = O_ACCMODE,
            ["O_NONBLOCK"] = O_NONBLOCK,
            ["AF_UNIX"] = AF_UNIX,
            ["SOCK_STREAM"] = SOCK_STREAM,
            ["SOCK_SEQPACKET"] = SOCK_SEQPACKET,
            ["SOCK_CLOEXEC"] = SOCK_CLOEXEC,
            ["SOL_SOCKET"] = SOL_SOCKET,
            ["SO_PEERCRED"] = SO_PEERCRED,
            ["SCM_RIGHTS"] = SCM_RIGHTS,
            ["MSG_CTRUNC"] = MSG_CTRUNC,
            ["MSG_TRUNC"] = MSG_TRUNC,
            ["MSG_DONTWAIT"] = MSG_DONTWAIT,
            ["MSG_NOSIGNAL"] = MSG_NOSIGNAL,
            ["MSG_CMSG_CLOEXEC"] = MSG_CMSG_CLOEXEC,
            ["SHUT_RDWR"] = SHUT_RDWR,
            ["PROT_READ"] = PROT_READ,
            ["PROT_WRITE"] = PROT_WRITE,
            ["MAP_SHARED"] = MAP_SHARED,
            ["MAP_POPULATE"] = MAP_POPULATE,
            ["S_IFMT"] = S_IFMT,
            ["S_IFREG"] = S_IFREG,
            ["S_IFIFO"] = S_IFIFO,
            ["S_IFSOCK"] = S_IFSOCK,
            ["POLLIN"] = POLLIN,
            ["POLLOUT"] = POLLOUT,
            ["POLLRDHUP"] = POLLRDHUP,
            ["POLLERR"] = POLLERR,
            ["POLLHUP"] = POLLHUP,
            ["DMA_BUF_IOCTL_SYNC"] = DMA_BUF_IOCTL_SYNC,
            ["DMA_BUF_SET_NAME_B"] = DMA_BUF_SET_NAME_B,
            ["DMA_BUF_SYNC_READ"] = (long)DMA_BUF_SYNC_READ,
            ["DMA_BUF_SYNC_WRITE"] = (long)DMA_BUF_SYNC_WRITE,
            ["DMA_BUF_SYNC_RW"] = (long)DMA_BUF_SYNC_RW,
            ["DMA_BUF_SYNC_START"] = (long)DMA_BUF_SYNC_START,
            ["DMA_BUF_SYNC_END"] = (long)DMA_BUF_SYNC_END,
            ["DMA_BUF_NAME_LEN"] = DMA_BUF_NAME_LEN,
            ["DMA_HEAP_IOCTL_ALLOC"] = DMA_HEAP_IOCTL_ALLOC,
            ["UDMABUF_CREATE"] = UDMABUF_CREATE,
            ["UDMABUF_FLAGS_CLOEXEC"] = UDMABUF_FLAGS_CLOEXEC,
            ["UDMABUF_CREATE_LIST"] = UDMABUF_CREATE_LIST,
            ["DMA_BUF_IOCTL_EXPORT_SYNC_FILE"] = DMA_BUF_IOCTL_EXPORT_SYNC_FILE,
            ["DMA_BUF_IOCTL_IMPORT_SYNC_FILE"] = DMA_BUF_IOCTL_IMPORT_SYNC_FILE,
            ["SYNC_IOC_MERGE"] = SYNC_IOC_MERGE,
            ["SYNC_IOC_FILE_INFO"] = SYNC_IOC_FILE_INFO,
            ["VGEM_FENCE_WRITE"] = VGEM_FENCE_WRITE,
            ["DRM_IOCTL_VGEM_FENCE_ATTACH"] = DRM_IOCTL_VGEM_FENCE_ATTACH,
            ["DRM_IOCTL_VGEM_FENCE_SIGNAL"] = DRM_IOCTL_VGEM_FENCE_SIGNAL,
            ["DRM_CLOEXEC"] = DRM_CLOEXEC,
            ["DRM_RDWR"] = DRM_RDWR,
            ["DRM_IOCTL_VERSION"] = DRM_IOCTL_VERSION,
            ["DRM_IOCTL_GEM_CLOSE"] = DRM_IOCTL_GEM_CLOSE,
            ["DRM_IOCTL_PRIME_HANDLE_TO_FD"] = DRM_IOCTL_PRIME_HANDLE_TO_FD,
            ["DRM_IOCTL_PRIME_FD_TO_HANDLE"] = DRM_IOCTL_PRIME_FD_TO_HANDLE,
            ["DRM_IOCTL_MODE_CREATE_DUMB"] = DRM_IOCTL_MODE_CREATE_DUMB,
            ["sizeof(((struct v4l2_format *)0)->fmt)"] = sizeof(v4l2_format.fmt_union),
            ["sizeof(((struct v4l2_buffer *)0)->m)"] = sizeof(v4l2_buffer.m_union),
            ["VIDIOC_QUERYCAP"] = VIDIOC_QUERYCAP,
            ["VIDIOC_ENUM_FMT"] = VIDIOC_ENUM_FMT,
            ["VIDIOC_G_FMT"] = VIDIOC_G_FMT,
            ["VIDIOC_S_FMT"] = VIDIOC_S_FMT,
            ["VIDIOC_REQBUFS"] = VIDIOC_REQBUFS,
            ["VIDIOC_QUERYBUF"] = VIDIOC_QUERYBUF,
            ["VIDIOC_QBUF"] = VIDIOC_QBUF,
            ["VIDIOC_EXPBUF"] = VIDIOC_EXPBUF,
            ["VIDIOC_DQBUF"] = VIDIOC_DQBUF,
            ["VIDIOC_STREAMON"] = VIDIOC_STREAMON,
            ["VIDIOC_STREAMOFF"] = VIDIOC_STREAMOFF,
            ["V4L2_BUF_TYPE_VIDEO_CAPTURE"] = V4L2_BUF_TYPE_VIDEO_CAPTURE,
            ["V4L2_MEMORY_MMAP"] = V4L2_MEMORY_MMAP,
            ["V4L2_MEMORY_USERPTR"] = V4L2_MEMORY_USERPTR,
            ["V4L2_MEMORY_OVERLAY"] = V4L2_MEMORY_OVERLAY,
            ["V4L2_MEMORY_DMABUF"] = V4L2_MEMORY_DMABUF,
            ["V4L2_PIX_FMT_YUYV"] = V4L2_PIX_FMT_YUYV,
            ["V4L2_FMT_FLAG_COMPRESSED"] = V4L2_FMT_FLAG_COMPRESSED,
            ["V4L2_FMT_FLAG_EMULATED"] = V4L2_FMT_FLAG_EMULATED,
            ["EPERM"] = EPERM,
            ["ENOENT"] = ENOENT,
            ["EINTR"] = EINTR,
            ["EIO"] = EIO,
            ["EBADF"] = EBADF,
            ["EAGAIN"] = EAGAIN,
            ["ENOMEM"] = ENOMEM,
            ["EACCES"] = EACCES,
            ["EFAULT"] = EFAULT,
            ["EBUSY"] = EBUSY,
            ["EEXIST"] = EEXIST,
            ["ENODEV"] = ENODEV,
            ["EINVAL"] = EINVAL,
            ["ENFILE"] = ENFILE,
            ["EMFILE"] = EMFILE,
            ["ENOTTY"] = ENOTTY,
            ["EFBIG"] = EFBIG,
            ["ENOSPC"] = ENOSPC,
            ["EPIPE"] = EPIPE,
            ["ENOSYS"] = ENOSYS,
            ["ENOTSOCK"] = ENOTSOCK,
            ["EMSGSIZE"] = EMSGSIZE,
            ["EOPNOTSUPP"] = EOPNOTSUPP,
            ["EADDRINUSE"] = EADDRINUSE,
            ["ECONNRESET"] = ECONNRESET,
            ["ENOTCONN"] = ENOTCONN,
            ["EBADFD"] = EBADFD,
            ["ETIMEDOUT"] = ETIMEDOUT,
            ["ECONNREFUSED"] = ECONNREFUSED,
        };
        AddStruct<msghdr>(d, "msghdr");
        AddStruct<cmsghdr>(d, "cmsghdr");
        AddStruct<iovec>(d, "iovec");
        AddStruct<ucred>(d, "ucred");
        AddStruct<sockaddr_un>(d, "sockaddr_un");
        AddStruct<pollfd>(d, "pollfd");
        AddStruct<dma_buf_sync>(d, "dma_buf_sync");
        AddStruct<dma_heap_allocation_data>(d, "dma_heap_allocation_data");
        AddStruct<udmabuf_create>(d, "udmabuf_create");
        AddStruct<udmabuf_create_item>(d, "udmabuf_create_item");
        AddStruct<udmabuf_create_list>(d, "udmabuf_create_list");
        AddStruct<dma_buf_export_sync_file>(d, "dma_buf_export_sync_file");
        AddStruct<dma_buf_import_sync_file>(d, "dma_buf_import_sync_file");
        AddStruct<sync_merge_data>(d, "sync_merge_data");
        AddStruct<sync_fence_info>(d, "sync_fence_info");
        AddStruct<sync_file_info>(d, "sync_file_info");
        AddStruct<drm_vgem_fence_attach>(d, "drm_vgem_fence_attach");
        AddStruct<drm_vgem_fence_signal>(d, "drm_vgem_fence_signal");
        AddStruct<drm_version>(d, "drm_version");
        AddStruct<drm_gem_close>(d, "drm_gem_close");
        AddStruct<drm_prime_handle>(d, "drm_prime_handle");
        AddStruct<drm_mode_create_dumb>(d, "drm_mode_create_dumb");
        AddStruct<v4l2_capability>(d, "v4l2_capability");
        AddStruct<v4l2_fmtdesc>(d, "v4l2_fmtdesc");
        AddStruct<v4l2_pix_format>(d, "v4l2_pix_format");
        AddStruct<v4l2_format>(d, "v4l2_format");
        AddStruct<v4l2_requestbuffers>(d, "v4l2_requestbuffers");
        AddStruct<v4l2_timecode>(d, "v4l2_timecode");
        AddStruct<timeval>(d, "timeval");
        AddStruct<v4l2_buffer>(d, "v4l2_buffer");
        AddStruct<v4l2_exportbuffer>(d, "v4l2_exportbuffer");
        AddV4l2Enums(d);
        return d;
    }

    /// <summary>
    /// sizeof and the offset of every field, named as C names them; the members of a union or struct declared inside
    /// <typeparamref name="T"/> (as <c>v4l2_buffer.m</c>) by their path from <typeparamref name="T"/>.
    /// </summary>
    private static void AddStruct<T>(Dictionary<string, long> d, string name)
        where T : unmanaged
    {
        d[$"sizeof({name})"] = Unsafe.SizeOf<T>();
        AddFields(d, typeof(T), name, 0);
    }

    private static void AddFields(Dictionary<string, long> d, Type type, string path, long offset)
    {
        foreach (System.Reflection.FieldInfo f in type.GetFields(System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.Public))
        {
            long at = offset + Marshal.OffsetOf(type, f.Name);
            d[$"offsetof({path}.{f.Name})"] = at;
            if (f.FieldType.DeclaringType == type && !f.IsDefined(typeof(FixedBufferAttribute), inherit: false))
            {
                AddFields(d, f.FieldType, $"{path}.{f.Name}", at);
            }
        }
    }

    /// <summary>The public V4L2 enums carry the kernel's values: each member against its C constant.</summary>
    private static void AddV4l2Enums(Dictionary<string, long> d)
    {
        foreach (V4l2.V4l2Caps c in Enum.GetValues<V4l2.V4l2Caps>())
        {
            d["V4L2_CAP_" + CName(c.ToString())] = (long)c;
        }

        foreach (V4l2.V4l2Field f in Enum.GetValues<V4l2.V4l2Field>())
        {
            d["V4L2_FIELD_" + CName(f.ToString())] = (long)f;
        }

        foreach (V4l2.V4l2BufferFlags f in Enum.GetValues<V4l2.V4l2BufferFlags>())
        {
            d["V4L2_BUF_FLAG_" + CName(f.ToString())] = (long)f;
        }

        // these have an interop constant too, which the dictionary checks against the header
        Assert.Equal(V4L2_MEMORY_MMAP, (uint)V4l2.V4l2Memory.Mmap);
        Assert.Equal(V4L2_MEMORY_DMABUF, (uint)V4l2.V4l2Memory.DmaBuf);
        Assert.Equal(V4L2_PIX_FMT_YUYV, V4l2.V4l2FourCC.Yuyv.Value);
    }

    /// <summary>A PascalCase member name as the C constant's suffix: <c>VideoCaptureMplane</c> to <c>VIDEO_CAPTURE_MPLANE</c>.</summary>
    private static string CName(string member) => member == "ReadWrite"
        ? "READWRITE"
        : string.Concat(member.Select((ch, i) => i > 0 && char.IsUpper(ch) ? "_" + ch : char.ToUpperInvariant(ch).ToString()));

    private Dictionary<string, long> CompileAndRun()
    {
        string dir = Directory.CreateTempSubdirectory("dmabuf-layout-").FullName;
        try
        {
            string source = Path.Combine(dir, "layout.c");
            string exe = Path.Combine(dir, "layout");
            File.WriteAllText(source, Program);
            (int rc, string output) = Run("gcc", "-Wall", "-o", exe, source);
            Assert.True(rc == 0, "gcc could not compile the layout program:\n" + output);
            (rc, output) = Run(exe);
            Assert.Equal(0, rc);
            var values = new Dictionary<string, long>();
            foreach (string line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries))
            {
                if (line.StartsWith('#'))
                {
                    _output.WriteLine(line); // where the dma-buf values came from
                    continue;
                }

                int space = line.LastIndexOf(' ');
                values[line[..space]] = long.Parse(line[(space + 1)..], CultureInfo.InvariantCulture);
            }

            return values;
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static (int ExitCode, string Output) Run(string file, params string[] args)
    {
        var info = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in args)
        {
            info.ArgumentList.Add(a);
        }

        Process process;
        try
        {
            process = Process.Start(info)!;
        }
        catch (System.ComponentModel.Win32Exception e) when (file == "gcc")
        {
            Assert.Fail($"gcc is needed to check the interop layouts against the C headers and was not found ({e.Message}). Install it: apt-get install gcc.");
            throw;
        }

        using (process)
        {
            Task<string> err = process.StandardError.ReadToEndAsync();
            string output = process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            return (process.ExitCode, output + err.Result);
        }
    }
}

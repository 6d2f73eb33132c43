using System.Runtime.InteropServices;
using DmaBuf.Linux;

internal static partial class Interop
{
    internal static partial class Libc
    {
        // <drm/drm.h>: the DRM ioctl type is 'd'; DRM_CLOEXEC and DRM_RDWR are O_CLOEXEC and O_RDWR.
        private const uint DRM_IOCTL_BASE = 'd';
        internal const uint DRM_CLOEXEC = O_CLOEXEC;
        internal const uint DRM_RDWR = O_RDWR;

        /// <summary><c>_IOWR('d', 0x00, struct drm_version)</c>.</summary>
        internal const uint DRM_IOCTL_VERSION = ((_IOC_READ | _IOC_WRITE) << _IOC_DIRSHIFT) | (64u << _IOC_SIZESHIFT) | (DRM_IOCTL_BASE << _IOC_TYPESHIFT) | (0x00u << _IOC_NRSHIFT);

        /// <summary><c>_IOW('d', 0x09, struct drm_gem_close)</c>.</summary>
        internal const uint DRM_IOCTL_GEM_CLOSE = (_IOC_WRITE << _IOC_DIRSHIFT) | (8u << _IOC_SIZESHIFT) | (DRM_IOCTL_BASE << _IOC_TYPESHIFT) | (0x09u << _IOC_NRSHIFT);

        /// <summary><c>_IOWR('d', 0x2d, struct drm_prime_handle)</c>.</summary>
        internal const uint DRM_IOCTL_PRIME_HANDLE_TO_FD = ((_IOC_READ | _IOC_WRITE) << _IOC_DIRSHIFT) | (12u << _IOC_SIZESHIFT) | (DRM_IOCTL_BASE << _IOC_TYPESHIFT) | (0x2du << _IOC_NRSHIFT);

        /// <summary><c>_IOWR('d', 0x2e, struct drm_prime_handle)</c>.</summary>
        internal const uint DRM_IOCTL_PRIME_FD_TO_HANDLE = ((_IOC_READ | _IOC_WRITE) << _IOC_DIRSHIFT) | (12u << _IOC_SIZESHIFT) | (DRM_IOCTL_BASE << _IOC_TYPESHIFT) | (0x2eu << _IOC_NRSHIFT);

        /// <summary><c>_IOWR('d', 0xB2, struct drm_mode_create_dumb)</c>.</summary>
        internal const uint DRM_IOCTL_MODE_CREATE_DUMB = ((_IOC_READ | _IOC_WRITE) << _IOC_DIRSHIFT) | (32u << _IOC_SIZESHIFT) | (DRM_IOCTL_BASE << _IOC_TYPESHIFT) | (0xB2u << _IOC_NRSHIFT);

        // <drm/vgem_drm.h>: driver ioctls start at DRM_COMMAND_BASE (0x40).
        internal const uint VGEM_FENCE_WRITE = 0x1;

        /// <summary><c>DRM_IOWR(DRM_COMMAND_BASE + 0x1, struct drm_vgem_fence_attach)</c>.</summary>
        internal const uint DRM_IOCTL_VGEM_FENCE_ATTACH = ((_IOC_READ | _IOC_WRITE) << _IOC_DIRSHIFT) | (16u << _IOC_SIZESHIFT) | (DRM_IOCTL_BASE << _IOC_TYPESHIFT) | (0x41u << _IOC_NRSHIFT);

        /// <summary><c>DRM_IOW(DRM_COMMAND_BASE + 0x2, struct drm_vgem_fence_signal)</c>.</summary>
        internal const uint DRM_IOCTL_VGEM_FENCE_SIGNAL = (_IOC_WRITE << _IOC_DIRSHIFT) | (8u << _IOC_SIZESHIFT) | (DRM_IOCTL_BASE << _IOC_TYPESHIFT) | (0x42u << _IOC_NRSHIFT);

        [StructLayout(LayoutKind.Sequential)]
        internal struct drm_vgem_fence_attach
        {
            public uint handle;
            public uint flags;
            public uint out_fence;
            public uint pad;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct drm_vgem_fence_signal
        {
            public uint fence;
            public uint flags;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal unsafe struct drm_version
        {
            public int version_major;
            public int version_minor;
            public int version_patchlevel;
            public nuint name_len;
            public byte* name;
            public nuint date_len;
            public byte* date;
            public nuint desc_len;
            public byte* desc;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct drm_gem_close
        {
            public uint handle;
            public uint pad;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct drm_prime_handle
        {
            public uint handle;
            public uint flags;
            public int fd;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct drm_mode_create_dumb
        {
            public uint height;
            public uint width;
            public uint bpp;
            public uint flags;
            public uint handle;
            public uint pitch;
            public ulong size;
        }

        /// <summary>The name of the driver behind DRM node <paramref name="card"/> (<c>DRM_IOCTL_VERSION</c>), e.g. <c>vgem</c>.</summary>
        internal static unsafe string DrmDriverName(SafeFdHandle card)
        {
            const int capacity = 64;
            byte* name = stackalloc byte[capacity];
            var version = new drm_version { name = name, name_len = capacity };
            Ioctl(card, DRM_IOCTL_VERSION, &version, "ioctl(DRM_IOCTL_VERSION)");
            int length = (int)Math.Min(version.name_len, (nuint)capacity);
            return System.Text.Encoding.UTF8.GetString(name, length);
        }

        /// <summary>Creates a dumb buffer of <paramref name="height"/> rows of <paramref name="width"/> bytes.</summary>
        internal static unsafe drm_mode_create_dumb DrmCreateDumb(SafeFdHandle card, uint width, uint height)
        {
            var create = new drm_mode_create_dumb { width = width, height = height, bpp = 8 };
            Ioctl(card, DRM_IOCTL_MODE_CREATE_DUMB, &create, "ioctl(DRM_IOCTL_MODE_CREATE_DUMB)");
            return create;
        }

        /// <summary>Exports GEM object <paramref name="handle"/> as a read-write, close-on-exec dma-buf.</summary>
        internal static unsafe SafeFdHandle DrmPrimeHandleToFd(SafeFdHandle card, uint handle)
        {
            var prime = new drm_prime_handle { handle = handle, flags = DRM_CLOEXEC | DRM_RDWR, fd = -1 };
            Ioctl(card, DRM_IOCTL_PRIME_HANDLE_TO_FD, &prime, "ioctl(DRM_IOCTL_PRIME_HANDLE_TO_FD)");
            return new SafeFdHandle(prime.fd);
        }

        /// <summary>The GEM handle of dma-buf <paramref name="dmaBuf"/> on <paramref name="card"/>, importing it if needed.</summary>
        internal static unsafe uint DrmPrimeFdToHandle(SafeFdHandle card, SafeFdHandle dmaBuf)
        {
            bool added = false;
            try
            {
                dmaBuf.DangerousAddRef(ref added);
                var prime = new drm_prime_handle { fd = (int)dmaBuf.DangerousGetHandle() };
                Ioctl(card, DRM_IOCTL_PRIME_FD_TO_HANDLE, &prime, "ioctl(DRM_IOCTL_PRIME_FD_TO_HANDLE)");
                return prime.handle;
            }
            finally
            {
                if (added)
                {
                    dmaBuf.DangerousRelease();
                }
            }
        }

        /// <summary>
        /// Attaches a new unsignaled vgem fence to GEM object <paramref name="handle"/>'s reservation object, as a write
        /// fence when <paramref name="write"/>, otherwise as a read fence (<c>DRM_IOCTL_VGEM_FENCE_ATTACH</c>); returns its
        /// id for <see cref="DrmVgemFenceSignal"/>. vgem signals it itself after 10 s (VGEM_FENCE_TIMEOUT).
        /// </summary>
        internal static unsafe uint DrmVgemFenceAttach(SafeFdHandle card, uint handle, bool write)
        {
            var attach = new drm_vgem_fence_attach { handle = handle, flags = write ? VGEM_FENCE_WRITE : 0 };
            Ioctl(card, DRM_IOCTL_VGEM_FENCE_ATTACH, &attach, "ioctl(DRM_IOCTL_VGEM_FENCE_ATTACH)");
            return attach.out_fence;
        }

        /// <summary>Signals vgem fence <paramref name="fence"/> (<c>DRM_IOCTL_VGEM_FENCE_SIGNAL</c>).</summary>
        internal static unsafe void DrmVgemFenceSignal(SafeFdHandle card, uint fence)
        {
            var signal = new drm_vgem_fence_signal { fence = fence };
            Ioctl(card, DRM_IOCTL_VGEM_FENCE_SIGNAL, &signal, "ioctl(DRM_IOCTL_VGEM_FENCE_SIGNAL)");
        }

        /// <summary>Drops GEM handle <paramref name="handle"/> on <paramref name="card"/>.</summary>
        internal static unsafe void DrmGemClose(SafeFdHandle card, uint handle)
        {
            var close = new drm_gem_close { handle = handle };
            Ioctl(card, DRM_IOCTL_GEM_CLOSE, &close, "ioctl(DRM_IOCTL_GEM_CLOSE)");
        }
    }
}

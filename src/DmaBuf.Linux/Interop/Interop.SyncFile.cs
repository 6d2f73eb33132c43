using System.Runtime.InteropServices;
using DmaBuf.Linux;

internal static partial class Interop
{
    internal static partial class Libc
    {
        // <linux/dma-buf.h>: a dma-buf's implicit fences as a sync_file, and a sync_file's fences into the dma-buf.
        /// <summary><c>_IOWR('b', 2, struct dma_buf_export_sync_file)</c>.</summary>
        internal const uint DMA_BUF_IOCTL_EXPORT_SYNC_FILE = ((_IOC_READ | _IOC_WRITE) << _IOC_DIRSHIFT) | (8u << _IOC_SIZESHIFT) | ((uint)'b' << _IOC_TYPESHIFT) | (2u << _IOC_NRSHIFT);

        /// <summary><c>_IOW('b', 3, struct dma_buf_import_sync_file)</c>.</summary>
        internal const uint DMA_BUF_IOCTL_IMPORT_SYNC_FILE = (_IOC_WRITE << _IOC_DIRSHIFT) | (8u << _IOC_SIZESHIFT) | ((uint)'b' << _IOC_TYPESHIFT) | (3u << _IOC_NRSHIFT);

        // <linux/sync_file.h>
        internal const int SYNC_NAME_LEN = 32;

        /// <summary><c>_IOWR('&gt;', 3, struct sync_merge_data)</c>.</summary>
        internal const uint SYNC_IOC_MERGE = ((_IOC_READ | _IOC_WRITE) << _IOC_DIRSHIFT) | (48u << _IOC_SIZESHIFT) | ((uint)'>' << _IOC_TYPESHIFT) | (3u << _IOC_NRSHIFT);

        /// <summary><c>_IOWR('&gt;', 4, struct sync_file_info)</c>.</summary>
        internal const uint SYNC_IOC_FILE_INFO = ((_IOC_READ | _IOC_WRITE) << _IOC_DIRSHIFT) | (56u << _IOC_SIZESHIFT) | ((uint)'>' << _IOC_TYPESHIFT) | (4u << _IOC_NRSHIFT);

        [StructLayout(LayoutKind.Sequential)]
        internal struct dma_buf_export_sync_file
        {
            public uint flags;
            public int fd;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal struct dma_buf_import_sync_file
        {
            public uint flags;
            public int fd;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal unsafe struct sync_merge_data
        {
            public fixed byte name[SYNC_NAME_LEN];
            public int fd2;
            public int fence;
            public uint flags;
            public uint pad;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal unsafe struct sync_fence_info
        {
            public fixed byte obj_name[SYNC_NAME_LEN];
            public fixed byte driver_name[SYNC_NAME_LEN];
            public int status;
            public uint flags;
            public ulong timestamp_ns;
        }

        [StructLayout(LayoutKind.Sequential)]
        internal unsafe struct sync_file_info
        {
            public fixed byte name[SYNC_NAME_LEN];
            public int status;
            public uint flags;
            public uint num_fences;
            public uint pad;
            public ulong sync_fence_info;
        }

        /// <summary>
        /// <c>DMA_BUF_IOCTL_EXPORT_SYNC_FILE</c>: a sync_file of the fences an access of <paramref name="flags"/>
        /// (<c>DMA_BUF_SYNC_READ</c>, <c>_WRITE</c> or <c>_RW</c>) would wait for now.
        /// </summary>
        internal static unsafe SafeFdHandle DmaBufExportSyncFile(SafeFdHandle dmaBuf, uint flags)
        {
            var export = new dma_buf_export_sync_file { flags = flags, fd = -1 };
            Ioctl(dmaBuf, DMA_BUF_IOCTL_EXPORT_SYNC_FILE, &export, "ioctl(DMA_BUF_IOCTL_EXPORT_SYNC_FILE)", $"flags 0x{flags:x}");
            return new SafeFdHandle(export.fd);
        }

        /// <summary>
        /// <c>DMA_BUF_IOCTL_IMPORT_SYNC_FILE</c>: adds the sync_file's fences to the dma-buf, as read fences
        /// (<c>DMA_BUF_SYNC_READ</c>) or write fences (<c>DMA_BUF_SYNC_WRITE</c>, <c>_RW</c>).
        /// </summary>
        internal static unsafe void DmaBufImportSyncFile(SafeFdHandle dmaBuf, SafeFdHandle syncFile, uint flags)
        {
            bool added = false;
            try
            {
                syncFile.DangerousAddRef(ref added);
                var import = new dma_buf_import_sync_file { flags = flags, fd = (int)syncFile.DangerousGetHandle() };
                Ioctl(dmaBuf, DMA_BUF_IOCTL_IMPORT_SYNC_FILE, &import, "ioctl(DMA_BUF_IOCTL_IMPORT_SYNC_FILE)", $"flags 0x{flags:x}");
            }
            finally
            {
                if (added)
                {
                    syncFile.DangerousRelease();
                }
            }
        }

        /// <summary><c>SYNC_IOC_MERGE</c>: a new sync_file named <paramref name="name"/> with the fences of both.</summary>
        internal static unsafe SafeFdHandle SyncFileMerge(SafeFdHandle first, SafeFdHandle second, string name)
        {
            bool added = false;
            try
            {
                second.DangerousAddRef(ref added);
                var merge = new sync_merge_data { fd2 = (int)second.DangerousGetHandle(), fence = -1 };
                CopyName(name, merge.name);
                Ioctl(first, SYNC_IOC_MERGE, &merge, "ioctl(SYNC_IOC_MERGE)");
                return new SafeFdHandle(merge.fence);
            }
            finally
            {
                if (added)
                {
                    second.DangerousRelease();
                }
            }
        }

        /// <summary>
        /// <c>SYNC_IOC_FILE_INFO</c>, twice: once for the number of fences, once with room for them (a merge elsewhere
        /// cannot change a sync_file's fences, so the count holds).
        /// </summary>
        internal static unsafe (sync_file_info File, sync_fence_info[] Fences) SyncFileInfo(SafeFdHandle syncFile)
        {
            var info = default(sync_file_info);
            Ioctl(syncFile, SYNC_IOC_FILE_INFO, &info, "ioctl(SYNC_IOC_FILE_INFO)");
            var fences = new sync_fence_info[info.num_fences];
            if (fences.Length == 0)
            {
                return (info, fences);
            }

            fixed (sync_fence_info* p = fences)
            {
                info.sync_fence_info = (ulong)p;
                Ioctl(syncFile, SYNC_IOC_FILE_INFO, &info, "ioctl(SYNC_IOC_FILE_INFO)", $"{fences.Length} fences");
                info.sync_fence_info = 0;
            }

            return (info, fences);
        }

        /// <summary>A NUL-terminated fixed-size name field as a string.</summary>
        internal static unsafe string FixedName(byte* name, int capacity) =>
            System.Text.Encoding.UTF8.GetString(name, new ReadOnlySpan<byte>(name, capacity).IndexOf((byte)0) is int n and >= 0 ? n : capacity);

        private static unsafe void CopyName(string name, byte* target)
        {
            var span = new Span<byte>(target, SYNC_NAME_LEN);
            span.Clear();
            int length = System.Text.Encoding.UTF8.GetBytes(name.AsSpan(0, Math.Min(name.Length, SYNC_NAME_LEN - 1)), span[..(SYNC_NAME_LEN - 1)]);
            span[length] = 0;
        }
    }
}

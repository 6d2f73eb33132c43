namespace DmaBuf.Linux;

/// <summary>
/// Identity of the kernel object behind a descriptor: <c>(st_dev, st_ino)</c> from <c>fstat</c>. Two descriptors, in
/// one process or two, refer to the same buffer exactly when their identities are equal. Caches key by it (design rule
/// 6), never by a descriptor number, which the kernel reuses as soon as it is closed.
/// </summary>
/// <param name="Device">The <c>st_dev</c> of the file.</param>
/// <param name="Inode">The <c>st_ino</c> of the file.</param>
public readonly record struct FileIdentity(ulong Device, ulong Inode)
{
    /// <summary>The identity of the file behind <paramref name="fd"/>.</summary>
    /// <exception cref="LinuxErrorException"><c>fstat</c> failed.</exception>
    public static FileIdentity Of(SafeFdHandle fd)
    {
        ArgumentNullException.ThrowIfNull(fd);
        Interop.Libc.FileStatus st = Interop.Libc.FStat(fd);
        return new FileIdentity(st.Device, st.Inode);
    }

    /// <inheritdoc/>
    public override string ToString() => $"dev {Device:x}, ino {Inode}";
}

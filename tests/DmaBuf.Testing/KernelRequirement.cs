using DmaBuf.Linux;

namespace DmaBuf.Testing;

/// <summary>
/// Tests that need a device only a real kernel with the right drivers has (vgem, vivid, dma-buf heaps, udmabuf). They
/// carry the trait <c>Kernel=&lt;feature&gt;</c>, run for real inside the QEMU guests that <c>bash .ci/kernel-tests</c>
/// boots (Debian 12's 6.1 and its backports 6.12; heaps and udmabuf only on 6.12), and skip elsewhere with a reason
/// that names that script.
/// </summary>
public static class KernelRequirement
{
    /// <summary>The trait name the guest selects tests by (<c>-trait Kernel=vgem</c>).</summary>
    public const string Trait = "Kernel";

    /// <summary>The command that runs these tests against a real kernel.</summary>
    public const string Harness = "bash .ci/kernel-tests";

    /// <summary>
    /// Probes the machine and runs <paramref name="require"/>; when the feature is missing, skips the test with the
    /// probe's reason and how to run it in the guest.
    /// </summary>
    public static LinuxFeatures Require(Action<LinuxFeatures> require)
    {
        ArgumentNullException.ThrowIfNull(require);
        LinuxFeatures features = LinuxFeatures.Probe();
        try
        {
            require(features);
        }
        catch (FeatureNotAvailableException e)
        {
            Assert.Skip(SkipReason(e.Message));
        }

        return features;
    }

    /// <summary>A DRM PRIME exporter on the vgem card; skips the test when there is none.</summary>
    public static DrmPrimeExporter Vgem(MmapCache? cache = null, BufferRegistry? registry = null)
    {
        LinuxFeatures features = Require(f => f.RequireDrmDriver("vgem"));
        return new DrmPrimeExporter("vgem", cache ?? new MmapCache(), registry ?? new BufferRegistry(), features);
    }

    /// <summary>The skip reason for a missing kernel feature: what is missing, then where the test does run.</summary>
    public static string SkipReason(string missing) =>
        $"{missing} This test runs against real kernels (Debian's 6.1 and 6.12 in QEMU, with vgem and vivid loaded; dma-buf heaps and udmabuf on 6.12): {Harness}";
}

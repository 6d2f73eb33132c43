namespace DmaBuf.Stress.Tests;

public sealed class ModelWorkloadTests
{
    [Theory]
    [InlineData(true, true)]
    [InlineData(false, true)]
    [InlineData(false, false)]
    public void Probe(bool zero, bool pas)
    {
        var modes = pas ? new HashSet<ImportMappingMode> { ImportMappingMode.PerAttachment, ImportMappingMode.PerAddressSpace } : new HashSet<ImportMappingMode> { ImportMappingMode.PerAttachment };
        var r = ModelWorkload.Run(new ModelRunOptions { Seed = 1, Operations = 20000, FreshMemoryZeroed = zero, ImportModes = modes });
        TestContext.Current.TestOutputHelper!.WriteLine($"{r.Operations} ops {r.Programs} programs {r.Violation}\n{r.Reproduction}");
        Assert.True(r.Passed, r.Violation + "\n" + r.Reproduction);
    }
}

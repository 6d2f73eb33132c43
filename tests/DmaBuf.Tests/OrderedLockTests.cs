namespace DmaBuf.Tests;

// These checks are compiled into debug builds of the framework, which is what `dotnet test` builds.
public sealed class OrderedLockTests
{
    [Fact]
    public void Enter_InHierarchyOrder_Succeeds()
    {
        var registry = new OrderedLock(LockLevel.Registry, "r");
        var buffer = new OrderedLock(LockLevel.Buffer, "b");
        var space = new OrderedLock(LockLevel.AddressSpace, "as");
        var iommu = new OrderedLock(LockLevel.Iommu, "iommu");

        using (registry.Enter())
        using (buffer.Enter())
        using (space.Enter())
        using (iommu.Enter())
        {
            Assert.Equal(4, OrderedLock.HeldByCurrentThread);
        }

        Assert.Equal(0, OrderedLock.HeldByCurrentThread);
    }

    [Theory]
    [InlineData(LockLevel.Buffer, LockLevel.Registry)]
    [InlineData(LockLevel.AddressSpace, LockLevel.Buffer)]
    [InlineData(LockLevel.Iommu, LockLevel.AddressSpace)]
    [InlineData(LockLevel.Buffer, LockLevel.Buffer)]
    public void Enter_Reversed_ThrowsLockOrderException(LockLevel outer, LockLevel inner)
    {
        var first = new OrderedLock(outer, "outer");
        var second = new OrderedLock(inner, "inner");

        using (first.Enter())
        {
            LockOrderException e = Assert.Throws<LockOrderException>(() =>
            {
                using OrderedLock.Scope s = second.Enter();
            });
            Assert.Contains("outer", e.Message);
            Assert.False(second.IsHeldByCurrentThread);
        }
    }

    [Fact]
    public void Enter_SameLockAgain_IsReentrant()
    {
        var buffer = new OrderedLock(LockLevel.Buffer, "b");
        using (buffer.Enter())
        using (buffer.Enter())
        {
            Assert.True(buffer.IsHeldByCurrentThread);
        }

        Assert.False(buffer.IsHeldByCurrentThread);
    }

    [Fact]
    public void AssertNoneHeld_WhileHolding_Throws()
    {
        var buffer = new OrderedLock(LockLevel.Buffer, "b");
        OrderedLock.AssertNoneHeld("outside");
        using (buffer.Enter())
        {
            Assert.Throws<LockOrderException>(() => OrderedLock.AssertNoneHeld("callback"));
        }
    }

    [Fact]
    public void ExporterMap_TakingRegistryLock_IsCaught()
    {
        // An exporter that lists the registry from Map would take the registry lock inside the buffer lock.
        var registry = new BufferRegistry();
        var exporter = new TestExporter();
        using DmaBufHandle handle = Make.Buffer(exporter, registry);
        exporter.OnMap = _ => registry.List();
        using DmaBufAttachment a = handle.Attach(Make.Device());

        Assert.Throws<LockOrderException>(() => a.Map(DmaDirection.ToDevice));
        Assert.Equal(0, a.LiveMappingCount);
    }
}

using System.Collections.Concurrent;

namespace DmaBuf.Tests;

/// <summary>An address space that hands out increasing device addresses and remembers what is mapped.</summary>
internal sealed class TestAddressSpace : IDmaAddressSpace
{
    private static long s_nextId;
    private readonly OrderedLock _lock = new(LockLevel.AddressSpace, "test address space");
    private ulong _next = 0x1000_0000;

    public long Id { get; } = Interlocked.Increment(ref s_nextId);

    public string Name => "test-as";

    public HashSet<ulong> Live { get; } = [];

    public int Maps { get; private set; }

    public int Unmaps { get; private set; }

    public ScatterTable Map(ScatterTable physical, DmaDirection direction)
    {
        using OrderedLock.Scope scope = _lock.Enter();
        ulong iova = _next;
        _next += (physical.TotalLength + 0xfff) & ~0xfffUL;
        Live.Add(iova);
        Maps++;
        return ScatterTable.Single(iova, physical.TotalLength);
    }

    public void Unmap(ScatterTable mapped, DmaDirection direction)
    {
        using OrderedLock.Scope scope = _lock.Enter();
        if (!Live.Remove(mapped.Segments[0].Address))
        {
            throw new ArgumentException("not mapped");
        }

        Unmaps++;
    }
}

internal sealed class TestDevice(string name, IDmaAddressSpace space) : IDmaDevice
{
    public string Name { get; } = name;

    public IDmaAddressSpace AddressSpace { get; } = space;

    public bool IsCoherent => true;
}

/// <summary>An exporter over a managed array that records every call and lets tests hook Release.</summary>
internal sealed class TestExporter : IDmaBufExporter
{
    public string Name => "test";

    public int ReleaseCalls;
    public int AttachCalls;
    public int DetachCalls;
    public bool RefuseAttach;
    public Action<DmaBuffer>? OnRelease;
    public Action<DmaBufAttachment>? OnMap;
    public ConcurrentQueue<string> Calls { get; } = new();
    public List<(CpuAccess Access, bool Begin)> CpuCalls { get; } = [];

    public void Attach(DmaBufAttachment attachment)
    {
        if (RefuseAttach)
        {
            throw new NotSupportedException("device refused");
        }

        AttachCalls++;
        Calls.Enqueue("attach");
    }

    public void Detach(DmaBufAttachment attachment)
    {
        DetachCalls++;
        Calls.Enqueue("detach");
    }

    public ScatterTable Map(DmaBufAttachment attachment, DmaDirection direction)
    {
        OnMap?.Invoke(attachment);
        Calls.Enqueue("map");
        return attachment.Device.AddressSpace.Map(ScatterTable.Single(0x8000_0000, (ulong)attachment.Buffer.Size), direction);
    }

    public void Unmap(DmaBufAttachment attachment, ScatterTable table, DmaDirection direction)
    {
        Calls.Enqueue("unmap");
        attachment.Device.AddressSpace.Unmap(table, direction);
    }

    public void Release(DmaBuffer buffer)
    {
        Interlocked.Increment(ref ReleaseCalls);
        Calls.Enqueue("release");
        OnRelease?.Invoke(buffer);
    }

    public void BeginCpuAccess(DmaBuffer buffer, CpuAccess access) => CpuCalls.Add((access, true));

    public void EndCpuAccess(DmaBuffer buffer, CpuAccess access) => CpuCalls.Add((access, false));
}

internal static class Make
{
    public static DmaBufHandle Buffer(TestExporter exporter, BufferRegistry? registry = null, long size = 4096, string? name = null) =>
        DmaBuffer.Export(new DmaBufExportInfo { Exporter = exporter, Size = size, Registry = registry ?? new BufferRegistry(), Name = name });

    public static TestDevice Device(string name = "dev") => new(name, new TestAddressSpace());
}

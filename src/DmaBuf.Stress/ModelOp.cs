using DmaBuf.Simulation;

namespace DmaBuf.Stress;

/// <summary>What one step of a model program does. Its operands are read from <see cref="ModelOp"/>.</summary>
/// <remarks>
/// Operands that pick an object (a handle, an attachment, a mapping, an import) are taken modulo the number of such
/// objects alive at that step, so every prefix and every shrunk program stays meaningful; a step with nothing to pick
/// from does nothing.
/// </remarks>
public enum ModelOpKind
{
    /// <summary>Allocate from a heap. A: heap (system, contiguous, device-local); B: size class.</summary>
    Allocate,

    /// <summary>Duplicate a handle. A: handle.</summary>
    Duplicate,

    /// <summary>Dispose a handle. A: handle.</summary>
    DisposeHandle,

    /// <summary>Attach a device. A: handle; B: device.</summary>
    Attach,

    /// <summary>Detach (dispose an attachment). A: attachment.</summary>
    Detach,

    /// <summary>Map an attachment. A: attachment; B: direction.</summary>
    Map,

    /// <summary>Unmap one of an attachment's mappings. A: attachment; B: mapping.</summary>
    Unmap,

    /// <summary>Pin through an attachment. A: attachment.</summary>
    Pin,

    /// <summary>Unpin through an attachment (refused when not pinned). A: attachment.</summary>
    Unpin,

    /// <summary><see cref="BufferMetadata.GetOrAdd{T}"/>. A: handle; B: key (placement-dependent or not); C: owner.</summary>
    MetadataAdd,

    /// <summary><see cref="BufferMetadata.TryGet{T}"/>. A: handle; B: key; C: owner.</summary>
    MetadataGet,

    /// <summary><see cref="BufferMetadata.Remove{T}"/>. A: handle; B: key; C: owner.</summary>
    MetadataRemove,

    /// <summary>Dispose a metadata owner (and put a fresh one in its place). A: owner.</summary>
    OwnerTeardown,

    /// <summary><see cref="CachedMappingExtensions.GetOrAddMapping"/>. A: handle; B: owner; C: device; D: direction.</summary>
    CachedMapping,

    /// <summary>Create an <see cref="ImportContext"/>. A: device; B: mode; C: budget class.</summary>
    CreateContext,

    /// <summary>Dispose an import context. A: context.</summary>
    DisposeContext,

    /// <summary><see cref="ImportContext.Import"/>. A: context; B: handle.</summary>
    Import,

    /// <summary><see cref="ImportedBuffer.Map"/>, in use or not. A: import; B: direction.</summary>
    ImportMap,

    /// <summary>End one use of an import (refused when it has none). A: import.</summary>
    EndUse,

    /// <summary>Move a device-local buffer. A: device-local handle; B: 0 evict to system memory, 1 compact in device memory.</summary>
    Move,

    /// <summary>A device writes through a live mapping. A: mapping; B: offset; C: length class; D: data seed.</summary>
    DmaWrite,

    /// <summary>A device reads through a live mapping. A: mapping; B: offset; C: length class.</summary>
    DmaRead,

    /// <summary>A bracketed CPU write. A: handle; B: offset; C: length class; D: data seed.</summary>
    CpuWrite,

    /// <summary>A CPU read. A: handle; B: offset; C: length class; D: odd for a read without a bracket when no device wrote since the last one.</summary>
    CpuRead,
}

/// <summary>One step of a model program.</summary>
/// <param name="Kind">What the step does.</param>
/// <param name="A">First operand (see <see cref="ModelOpKind"/>).</param>
/// <param name="B">Second operand.</param>
/// <param name="C">Third operand.</param>
/// <param name="D">Fourth operand.</param>
public readonly record struct ModelOp(ModelOpKind Kind, int A, int B, int C, int D);

/// <summary>A whole model program: the SoC it runs on and its steps.</summary>
/// <param name="Topology">How the simulated SoC's devices sit behind IOMMUs.</param>
/// <param name="MemorySeed">Seed of the page allocator's shuffle (physical placement).</param>
/// <param name="Ops">The steps, in order.</param>
public sealed record ModelProgram(Topology Topology, int MemorySeed, IReadOnlyList<ModelOp> Ops);

/// <summary>What one run of a model program found.</summary>
/// <param name="Steps">Steps executed, teardown included.</param>
/// <param name="Violation">The first difference between the framework and the model, or null.</param>
/// <param name="Code">The steps executed, as C# that reproduces them against the public API.</param>
public sealed record ModelProgramResult(int Steps, string? Violation, string Code)
{
    /// <summary>Whether the run matched the model throughout.</summary>
    public bool Passed => Violation is null;
}

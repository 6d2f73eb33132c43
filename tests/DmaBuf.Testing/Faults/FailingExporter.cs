// Ownership: a FailingExporter owns nothing. It forwards every operation to the exporter it wraps, which keeps owning
// the backing store; it only counts calls and throws where its FaultInjector says so.
namespace DmaBuf.Testing;

/// <summary>An operation of <see cref="IDmaBufExporter"/>, as a fault-injection point.</summary>
public enum ExporterOperation
{
    /// <summary><see cref="IDmaBufExporter.Attach"/>.</summary>
    Attach,

    /// <summary><see cref="IDmaBufExporter.Detach"/>.</summary>
    Detach,

    /// <summary><see cref="IDmaBufExporter.Map"/>.</summary>
    Map,

    /// <summary><see cref="IDmaBufExporter.Unmap"/>.</summary>
    Unmap,

    /// <summary><see cref="IDmaBufExporter.Release"/>.</summary>
    Release,

    /// <summary><see cref="IDmaBufExporter.BeginCpuAccess"/>.</summary>
    BeginCpuAccess,

    /// <summary><see cref="IDmaBufExporter.EndCpuAccess"/>.</summary>
    EndCpuAccess,

    /// <summary><see cref="IDmaBufExporter.Vmap"/>.</summary>
    Vmap,

    /// <summary><see cref="IDmaBufExporter.Pin"/>.</summary>
    Pin,

    /// <summary><see cref="IDmaBufExporter.Unpin"/>.</summary>
    Unpin,
}

/// <summary>When an injected exporter failure is thrown, relative to the wrapped exporter's own call.</summary>
public enum FaultTiming
{
    /// <summary>Throw instead of calling the wrapped exporter: the operation failed and did nothing.</summary>
    Before,

    /// <summary>
    /// Call the wrapped exporter, then throw: the work is done but an error is reported. For the operations the
    /// contract says must not throw (Detach, Unmap, Unpin, Release), this is a broken exporter whose work still happened.
    /// </summary>
    After,
}

/// <summary>
/// An <see cref="IDmaBufExporter"/> decorator that makes chosen calls fail: the <i>n</i>-th <see cref="ExporterOperation.Map"/>,
/// every <see cref="ExporterOperation.Attach"/> from the third on, and so on (see <see cref="Faults"/>). Every call is
/// counted, failed or not, so a test can also check that <see cref="IDmaBufExporter.Release"/> ran exactly once.
/// </summary>
/// <remarks>
/// The exceptions are the ones the contract allows: <see cref="NotSupportedException"/> from Attach and Vmap,
/// <see cref="DmaMappingException"/> from Map, and <see cref="InjectedFaultException"/> elsewhere; each carries an
/// <see cref="InjectedFaultException"/> (itself or as the inner exception) naming the operation and the call. A buffer
/// must be exported with the decorator as its <see cref="DmaBuffer.Exporter"/> for the framework to call it, and the
/// wrapped exporter must recognise the buffer by its <see cref="DmaBuffer.ExporterPrivate"/>, not by
/// <see cref="DmaBuffer.Exporter"/>.
/// </remarks>
public sealed class FailingExporter : IDmaBufExporter
{
    private readonly IDmaBufExporter _inner;
    private readonly int[] _succeeded = new int[Enum.GetValues<ExporterOperation>().Length];
    private readonly Dictionary<ExporterOperation, FaultTiming> _timing = new()
    {
        [ExporterOperation.Detach] = FaultTiming.After,
        [ExporterOperation.Unmap] = FaultTiming.After,
        [ExporterOperation.Unpin] = FaultTiming.After,
        [ExporterOperation.Release] = FaultTiming.After,
    };

    /// <summary>Wraps <paramref name="inner"/>.</summary>
    public FailingExporter(IDmaBufExporter inner, FaultInjector<ExporterOperation>? faults = null)
    {
        ArgumentNullException.ThrowIfNull(inner);
        _inner = inner;
        Faults = faults ?? new FaultInjector<ExporterOperation>();
    }

    /// <summary>Which calls fail, and the count of every operation's calls.</summary>
    public FaultInjector<ExporterOperation> Faults { get; }

    /// <summary>The wrapped exporter.</summary>
    public IDmaBufExporter Inner => _inner;

    /// <inheritdoc/>
    public string Name => _inner.Name;

    /// <summary>
    /// Calls of <paramref name="operation"/> that returned normally: neither an injected failure nor one of the wrapped
    /// exporter's own (a map whose address space is full, say). Maps that succeeded are the ones that need an unmap.
    /// </summary>
    public int Succeeded(ExporterOperation operation) => Volatile.Read(ref _succeeded[(int)operation]);

    /// <summary>
    /// When an injected failure of <paramref name="operation"/> is thrown. Default: <see cref="FaultTiming.After"/> for
    /// the must-not-throw operations (Detach, Unmap, Unpin, Release), <see cref="FaultTiming.Before"/> for the rest.
    /// </summary>
    public FaultTiming TimingOf(ExporterOperation operation) => _timing.GetValueOrDefault(operation, FaultTiming.Before);

    /// <summary>Sets when an injected failure of <paramref name="operation"/> is thrown.</summary>
    public FailingExporter SetTiming(ExporterOperation operation, FaultTiming timing)
    {
        _timing[operation] = timing;
        return this;
    }

    /// <inheritdoc/>
    public void Attach(DmaBufAttachment attachment) => Run(ExporterOperation.Attach, () => _inner.Attach(attachment));

    /// <inheritdoc/>
    public void Detach(DmaBufAttachment attachment) => Run(ExporterOperation.Detach, () => _inner.Detach(attachment));

    /// <inheritdoc/>
    public ScatterTable Map(DmaBufAttachment attachment, DmaDirection direction)
    {
        ScatterTable? table = null;
        Run(ExporterOperation.Map, () => table = _inner.Map(attachment, direction));
        return table!;
    }

    /// <inheritdoc/>
    public void Unmap(DmaBufAttachment attachment, ScatterTable table, DmaDirection direction) =>
        Run(ExporterOperation.Unmap, () => _inner.Unmap(attachment, table, direction));

    /// <inheritdoc/>
    public void Release(DmaBuffer buffer) => Run(ExporterOperation.Release, () => _inner.Release(buffer));

    /// <inheritdoc/>
    public void BeginCpuAccess(DmaBuffer buffer, CpuAccess access) =>
        Run(ExporterOperation.BeginCpuAccess, () => _inner.BeginCpuAccess(buffer, access));

    /// <inheritdoc/>
    public void EndCpuAccess(DmaBuffer buffer, CpuAccess access) =>
        Run(ExporterOperation.EndCpuAccess, () => _inner.EndCpuAccess(buffer, access));

    /// <inheritdoc/>
    public IDmaBufCpuView Vmap(DmaBuffer buffer)
    {
        IDmaBufCpuView? view = null;
        Run(ExporterOperation.Vmap, () => view = _inner.Vmap(buffer));
        return view!;
    }

    /// <inheritdoc/>
    public void Pin(DmaBufAttachment attachment) => Run(ExporterOperation.Pin, () => _inner.Pin(attachment));

    /// <inheritdoc/>
    public void Unpin(DmaBufAttachment attachment) => Run(ExporterOperation.Unpin, () => _inner.Unpin(attachment));

    private void Run(ExporterOperation operation, Action call)
    {
        int nth = Faults.Calls(operation) + 1;
        if (!Faults.ShouldFail(operation))
        {
            call();
            Interlocked.Increment(ref _succeeded[(int)operation]);
            return;
        }

        if (TimingOf(operation) == FaultTiming.After)
        {
            call();
        }

        throw Failure(operation, nth);
    }

    private Exception Failure(ExporterOperation operation, int nth)
    {
        var injected = new InjectedFaultException($"Injected fault: {_inner.Name} {operation}, call {nth}.");
        return operation switch
        {
            ExporterOperation.Attach or ExporterOperation.Vmap => new NotSupportedException(injected.Message, injected),
            ExporterOperation.Map => new DmaMappingException(injected.Message, injected),
            _ => injected,
        };
    }
}

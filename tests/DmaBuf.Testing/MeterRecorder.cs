using System.Collections.Concurrent;
using System.Diagnostics.Metrics;

namespace DmaBuf.Testing;

/// <summary>
/// Listens to one meter as <c>dotnet-counters</c> does (a <see cref="MeterListener"/>): the instruments it publishes,
/// and the sum of every long measurement per instrument since the recorder was made.
/// </summary>
public sealed class MeterRecorder : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly ConcurrentDictionary<string, long> _totals = new(StringComparer.Ordinal);
    private readonly HashSet<string> _published = new(StringComparer.Ordinal);

    /// <summary>Starts listening to the meter named <paramref name="meterName"/>.</summary>
    public MeterRecorder(string meterName)
    {
        _listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == meterName)
            {
                lock (_published)
                {
                    _published.Add(instrument.Name);
                }

                l.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((instrument, value, _, _) => _totals.AddOrUpdate(instrument.Name, value, (_, v) => v + value));
        _listener.Start();
    }

    /// <summary>The sum of the measurements of the instrument named <paramref name="instrument"/>.</summary>
    public long this[string instrument] => _totals.GetValueOrDefault(instrument);

    /// <summary>The names of the meter's instruments, sorted.</summary>
    public IReadOnlyList<string> Published
    {
        get
        {
            lock (_published)
            {
                return [.. _published.Order(StringComparer.Ordinal)];
            }
        }
    }

    /// <inheritdoc/>
    public void Dispose() => _listener.Dispose();
}

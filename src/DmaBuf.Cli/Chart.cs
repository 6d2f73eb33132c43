using DmaBuf.Simulation;
using ScottPlot;

namespace DmaBuf.Cli;

/// <summary>Draws a simulation's results: mapping time per frame and map calls, one bar per strategy.</summary>
internal static class Chart
{
    /// <summary>Writes the chart to <paramref name="path"/>; the extension (.png or .svg) picks the format.</summary>
    /// <exception cref="ArgumentException">The extension is neither .png nor .svg.</exception>
    /// <param name="path">A .png or .svg file.</param>
    /// <param name="title">The run's settings, shown as the chart's title.</param>
    /// <param name="results">One bar per strategy, in this order.</param>
    public static void Save(string path, string title, IReadOnlyList<StrategyResult> results)
    {
        string ext = Path.GetExtension(path).ToLowerInvariant();
        if (ext is not (".png" or ".svg"))
        {
            throw new ArgumentException($"Chart file '{path}' must end in .png or .svg.");
        }

        var multiplot = new Multiplot();
        multiplot.AddPlots(2);
        Plot time = multiplot.GetPlot(0);
        Plot calls = multiplot.GetPlot(1);
        StrategyResult? baseline = results.FirstOrDefault(r => r.Strategy == MappingStrategy.Remap);
        Fill(time, results, r => r.Simulated.MappingNsPerFrame / 1000.0, $"{title}\nsimulated mapping time per frame", "µs per frame (simulated)",
            r => baseline is null || r == baseline || r.Simulated.MappingNsPerFrame == 0
                ? ""
                : $" ({(baseline.Simulated.MappingNsPerFrame / r.Simulated.MappingNsPerFrame).ToString("0.0", System.Globalization.CultureInfo.InvariantCulture)}× less)");
        Fill(calls, results, r => r.Counters.MapCalls, "map calls (mappings created)", "map calls", _ => "");

        const int width = 900, height = 800;
        if (ext == ".png")
        {
            multiplot.SavePng(path, width, height);
        }
        else
        {
            // Multiplot renders only bitmaps: stack the two plots' own SVG documents in one.
            var svg = new System.Text.StringBuilder();
            svg.Append(System.Globalization.CultureInfo.InvariantCulture,
                $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\">");
            for (int i = 0; i < 2; i++)
            {
                string part = multiplot.GetPlot(i).GetSvgXml(width, height / 2);
                int start = part.IndexOf("<svg", StringComparison.Ordinal);
                svg.Append(System.Globalization.CultureInfo.InvariantCulture, $"<g transform=\"translate(0,{i * height / 2})\">");
                svg.Append(part, start, part.Length - start);
                svg.Append("</g>");
            }

            svg.Append("</svg>");
            File.WriteAllText(path, svg.ToString());
        }
    }

    /// <summary>The colour of a strategy's bars, the same in every chart; remap, the baseline, is always red.</summary>
    internal static Color ColourOf(string strategy) => strategy switch
    {
        MappingStrategy.Remap => Colors.IndianRed,
        "keep-attachment" => Colors.SteelBlue,
        "meta" => Colors.SeaGreen,
        "exporter-cache" => Colors.DarkOrange,
        "domain-share" => Colors.MediumPurple,
        _ => Colors.Gray,
    };

    private static void Fill(Plot plot, IReadOnlyList<StrategyResult> results, Func<StrategyResult, double> value, string title, string yLabel, Func<StrategyResult, string> note)
    {
        var ticks = new Tick[results.Count];
        for (int i = 0; i < results.Count; i++)
        {
            StrategyResult r = results[i];
            double v = value(r);
            var bar = new Bar { Position = i, Value = v, FillColor = ColourOf(r.Strategy) };
            bar.Label = (v >= 100 || v == Math.Floor(v) ? v.ToString("N0", System.Globalization.CultureInfo.InvariantCulture) : v.ToString("0.0", System.Globalization.CultureInfo.InvariantCulture)) + note(r);
            var bars = plot.Add.Bar(bar);
            bars.ValueLabelStyle.FontSize = 15; // a bar a thirtieth of the tallest is still read by its label
            bars.ValueLabelStyle.Bold = true;
            bars.LegendText = r.Strategy == MappingStrategy.Remap ? "remap (baseline)" : r.Strategy;
            ticks[i] = new Tick(i, r.Strategy);
        }

        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(ticks);
        plot.Axes.Margins(bottom: 0, top: 0.2);
        plot.Title(title);
        plot.YLabel(yLabel);
        plot.ShowLegend(Alignment.UpperRight);
    }
}

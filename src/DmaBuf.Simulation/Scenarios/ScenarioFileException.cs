namespace DmaBuf.Simulation;

/// <summary>
/// A scenario file could not be read or is not valid. The message names the file, the line, the JSON path of the value
/// at fault and the valid choices.
/// </summary>
public sealed class ScenarioFileException : Exception
{
    /// <summary>Creates the exception with a message.</summary>
    public ScenarioFileException(string message) : base(message) { }

    /// <summary>Creates the exception with a message and inner exception.</summary>
    public ScenarioFileException(string message, Exception inner) : base(message, inner) { }

    /// <summary>Creates the exception with no message.</summary>
    public ScenarioFileException() { }

    /// <summary>Creates the exception for one value of a file.</summary>
    /// <param name="origin">The file (or other origin) of the scenario.</param>
    /// <param name="jsonPath">The JSON path of the value at fault, such as <c>$.devices[2].role</c>.</param>
    /// <param name="line">The 1-based line of that value, or 0 when not known.</param>
    /// <param name="problem">What is wrong, with the valid choices.</param>
    public ScenarioFileException(string origin, string jsonPath, int line, string problem)
        : base(line > 0 ? $"{origin}:{line}: {jsonPath}: {problem}" : $"{origin}: {jsonPath}: {problem}")
    {
        Origin = origin;
        JsonPath = jsonPath;
        Line = line;
    }

    /// <summary>The file (or other origin) of the scenario, when the problem is in one.</summary>
    public string? Origin { get; }

    /// <summary>The JSON path of the value at fault, when the problem is one value.</summary>
    public string? JsonPath { get; }

    /// <summary>The 1-based line of the value at fault, or 0 when not known.</summary>
    public int Line { get; }
}

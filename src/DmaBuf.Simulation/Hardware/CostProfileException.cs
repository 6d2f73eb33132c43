namespace DmaBuf.Simulation;

/// <summary>A cost profile could not be found or is not valid; the message names the problem.</summary>
public sealed class CostProfileException : Exception
{
    /// <summary>Creates the exception with a message.</summary>
    public CostProfileException(string message) : base(message) { }

    /// <summary>Creates the exception with a message and inner exception.</summary>
    public CostProfileException(string message, Exception inner) : base(message, inner) { }

    /// <summary>Creates the exception with no message.</summary>
    public CostProfileException() { }

    /// <summary>Creates the exception for one parameter.</summary>
    public CostProfileException(string message, string? parameterName) : base(message) => ParameterName = parameterName;

    /// <summary>The parameter at fault, when the problem is one parameter.</summary>
    public string? ParameterName { get; }
}

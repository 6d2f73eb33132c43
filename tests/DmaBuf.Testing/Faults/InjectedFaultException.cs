namespace DmaBuf.Testing;

/// <summary>A failure made on purpose by a fault-injection test, never by the code under test.</summary>
public sealed class InjectedFaultException : Exception
{
    /// <summary>Creates the exception with a message.</summary>
    public InjectedFaultException(string message) : base(message) { }

    /// <summary>Creates the exception with a message and inner exception.</summary>
    public InjectedFaultException(string message, Exception inner) : base(message, inner) { }

    /// <summary>Creates the exception with no message.</summary>
    public InjectedFaultException() : base("Injected fault.") { }
}

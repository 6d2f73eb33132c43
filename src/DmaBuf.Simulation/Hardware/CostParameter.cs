namespace DmaBuf.Simulation;

/// <summary>One parameter of a <see cref="CostProfile"/>, as listed by <see cref="CostProfile.Parameters"/>.</summary>
/// <param name="Name">The parameter's JSON name, e.g. <c>mapCallNs</c>.</param>
/// <param name="Value">The value; a flag is 0 or 1.</param>
/// <param name="IsFlag">Whether the parameter is a true/false flag rather than a number.</param>
/// <param name="Source">Where the value comes from: a publication, a kernel source file, or "estimate".</param>
public readonly record struct CostParameter(string Name, long Value, bool IsFlag, string Source);

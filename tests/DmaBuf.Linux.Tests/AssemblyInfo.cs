// Leak tests count this process's open descriptors and mappings; tests running side by side would disturb the counts.
[assembly: Xunit.v3.Parallelization(Mode = Xunit.Sdk.ParallelMode.None)]

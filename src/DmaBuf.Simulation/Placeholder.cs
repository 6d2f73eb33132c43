namespace DmaBuf.Simulation; internal static class Placeholder { }

namespace DmaBuf.Cli.Tests;

/// <summary>
/// The test classes that open buffer descriptors or sockets in this process, or count them (<c>dmabuf share</c>'s
/// leak check counts every memfd, dma-buf and socket the process holds): they run one after another, never alongside
/// each other.
/// </summary>
[CollectionDefinition(Name)]
public sealed class DescriptorCollection
{
    public const string Name = "descriptors";
}

using DmaBuf.Linux;

namespace DmaBuf.Cli;

/// <summary>What the ring phase of <c>dmabuf share</c> measured on the producer's side.</summary>
internal sealed record RingPhase(HandoffTimes Handoff, long DescriptorsSent, long WakeUpsSent);

/// <summary>
/// The ring transport's phase: a second channel between the same two processes, on the control ring with the chosen
/// wait, opened only for this phase (a spinning consumer would otherwise burn a CPU through the other measurements).
/// The consumer's side acknowledges on receipt (<see cref="BufferChannelOptions.AcknowledgeOnReceipt"/>): the
/// acknowledgement goes out from the receive path as soon as the frame is leased, not after the application's call.
/// </summary>
internal static class RingHandoff
{
    public static string SocketName(string name) => name + "-ring";

    public static BufferChannelOptions Options(RingWait wait, BufferChannelOptions basis) => new()
    {
        ImportCache = basis.ImportCache,
        ReturnTo = basis.ReturnTo,
        MaxRegisteredBuffers = basis.MaxRegisteredBuffers,
        MaxResidentBytes = basis.MaxResidentBytes,
        ExpectedProcessId = basis.ExpectedProcessId,
        Transport = ChannelTransport.Ring,
        Wait = wait,
        AcknowledgeOnReceipt = true, // the consumer's channel acknowledges from inside its receive path, once it holds the frame
    };

    /// <summary>Producer side: listens, waits for the consumer, and hands <paramref name="count"/> frames over the ring.</summary>
    public static RingPhase Measure(string name, BufferPool pool, int consumerPid, RingWait wait, int count, long firstFrame, TimeSpan patience)
    {
        BufferChannelOptions options = Options(wait, new BufferChannelOptions { ReturnTo = pool, ExpectedProcessId = consumerPid });
        using BufferChannelListener listener = BufferChannelListener.Listen(SocketName(name), options);
        using BufferChannel channel = listener.Accept(patience);
        HandoffTimes times = Handoffs.Measure(channel, pool, count, firstFrame, transient: false, patience);
        return new RingPhase(times, channel.Statistics.FdsSent, channel.WakeUpsSent);
    }

    /// <summary>
    /// Consumer side: connects once the producer listens (retrying while it does not yet), then consumes until the
    /// producer closes the channel.
    /// </summary>
    public static void Consume(string name, BufferChannelOptions basis, RingWait wait, Action<BufferChannel, ReceivedBuffer> consume, TimeSpan patience)
    {
        long deadline = Environment.TickCount64 + (long)patience.TotalMilliseconds;
        BufferChannel? channel = null;
        while (channel is null)
        {
            try
            {
                channel = BufferChannel.Connect(SocketName(name), Options(wait, basis));
            }
            catch (LinuxErrorException) when (Environment.TickCount64 < deadline)
            {
                Thread.Sleep(5); // not listening yet
            }
        }

        using (channel)
        {
            while (channel.Receive() is { } message)
            {
                if (message is ReceivedBuffer received)
                {
                    consume(channel, received);
                }
            }
        }
    }
}

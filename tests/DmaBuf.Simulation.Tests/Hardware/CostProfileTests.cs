using System.Text.Json.Nodes;

namespace DmaBuf.Simulation.Tests;

public sealed class CostProfileTests
{
    [Fact]
    public void Load_EveryBuiltInName_LoadsWithASourceForEveryParameter()
    {
        Assert.Equal(["smmuv3-strict", "vtd-lazy"], CostProfile.BuiltInNames);
        foreach (string name in CostProfile.BuiltInNames)
        {
            CostProfile profile = CostProfile.Load(name);
            Assert.Equal(name, profile.Name);
            Assert.False(string.IsNullOrWhiteSpace(profile.Description));
            Assert.Equal(CostProfile.ParameterNames.Count, profile.Parameters.Count);
            Assert.All(profile.Parameters, p => Assert.False(string.IsNullOrWhiteSpace(p.Source)));
        }
    }

    [Fact]
    public void Load_SmmuV3Strict_ReproducesDmaMapBenchmarkCalibration()
    {
        CostProfile p = CostProfile.Load("smmuv3-strict");

        // dma_map_single of one page: 1.1 us map, 0.5 us unmap; dma_map_sg of 8 pages: 1.4 us map, 1.3 us unmap.
        long map1 = p.MapCallNs + p.IovaCachedAllocNs + p.PteWriteNs;
        long map8 = p.MapCallNs + p.IovaCachedAllocNs + (8 * p.PteWriteNs);
        long unmap1 = p.UnmapCallNs + p.PteClearNs + p.TlbiCommandNs + p.CmdSyncNs + p.IovaFreeNs;
        long unmap8 = p.UnmapCallNs + (8 * (p.PteClearNs + p.TlbiCommandNs)) + p.CmdSyncNs + p.IovaFreeNs;
        Assert.Equal(1100, map1);
        Assert.InRange(map8, 1390, 1410);
        Assert.Equal(500, unmap1);
        Assert.InRange(unmap8, 1290, 1310);

        Assert.Equal(IommuMode.Strict, p.DefaultMode);
        Assert.False(p.RangeInvalidation);
        Assert.Equal(64, p.TlbiBatchSize);
        Assert.Equal(512, p.MaxTlbiOpsBeforeFullInvalidate);
        Assert.Equal(256, p.FlushQueueEntries);
        Assert.Equal(10_000_000, p.FlushTimeoutNs);
    }

    [Fact]
    public void Load_VtdLazy_ReproducesVIommuCalibrationAtThreeGHz()
    {
        CostProfile p = CostProfile.Load("vtd-lazy");

        // Strict map+unmap of one page: 6,909 cycles, 2,316 of them hardware interaction (the invalidation).
        long hardware = p.RangeTlbiNs + p.CmdSyncNs;
        long total = p.MapCallNs + p.IovaAllocNs + p.PteWriteNs + p.UnmapCallNs + p.PteClearNs + p.IovaFreeNs + hardware;
        Assert.InRange(total * 3, 6909 - 3, 6909 + 3);
        Assert.InRange(hardware * 3, 2316 - 3, 2316 + 3);

        Assert.Equal(IommuMode.Lazy, p.DefaultMode);
        Assert.True(p.RangeInvalidation);
        Assert.Equal(256, p.FlushQueueEntries);
    }

    [Fact]
    public void Load_UnknownName_ErrorListsValidNames()
    {
        var ex = Assert.Throws<CostProfileException>(() => CostProfile.Load("smmu-fast"));
        Assert.Contains("smmu-fast", ex.Message, StringComparison.Ordinal);
        Assert.Contains("smmuv3-strict", ex.Message, StringComparison.Ordinal);
        Assert.Contains("vtd-lazy", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_MissingFile_ErrorNamesTheFile()
    {
        string path = Path.Combine(Path.GetTempPath(), $"no-such-profile-{Guid.NewGuid():N}.json");
        var ex = Assert.Throws<CostProfileException>(() => CostProfile.Load(path));
        Assert.Contains(path, ex.Message, StringComparison.Ordinal);
        Assert.Contains("does not exist", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_FileWithBrokenJson_ClearErrorNamingTheFile()
    {
        string path = Path.Combine(Path.GetTempPath(), $"broken-profile-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, "{\"name\": \"x\", \"parameters\": {");
        try
        {
            var ex = Assert.Throws<CostProfileException>(() => CostProfile.Load(path));
            Assert.Contains(path, ex.Message, StringComparison.Ordinal);
            Assert.Contains("not valid", ex.Message, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Load_ValidFile_LoadsItsValues()
    {
        JsonObject doc = BuiltInJson("vtd-lazy");
        doc["name"] = "my-vtd";
        doc["parameters"]!["pteWriteNs"]!["value"] = 99;
        string path = Path.Combine(Path.GetTempPath(), $"profile-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, doc.ToJsonString());
        try
        {
            CostProfile p = CostProfile.Load(path);
            Assert.Equal("my-vtd", p.Name);
            Assert.Equal(99, p.PteWriteNs);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Parse_MissingParameter_ErrorNamesIt()
    {
        JsonObject doc = BuiltInJson("smmuv3-strict");
        doc["parameters"]!.AsObject().Remove("cmdSyncNs");

        var ex = Assert.Throws<CostProfileException>(() => CostProfile.Parse(doc.ToJsonString()));

        Assert.Equal("cmdSyncNs", ex.ParameterName);
        Assert.Contains("missing parameter 'cmdSyncNs'", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_UnknownParameter_ErrorNamesIt()
    {
        JsonObject doc = BuiltInJson("smmuv3-strict");
        doc["parameters"]!["warpDriveNs"] = new JsonObject { ["value"] = 1, ["source"] = "estimate" };

        var ex = Assert.Throws<CostProfileException>(() => CostProfile.Parse(doc.ToJsonString()));

        Assert.Equal("warpDriveNs", ex.ParameterName);
        Assert.Contains("unknown parameter 'warpDriveNs'", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_NegativeValue_ErrorNamesParameter()
    {
        JsonObject doc = BuiltInJson("smmuv3-strict");
        doc["parameters"]!["pteWriteNs"]!["value"] = -5;

        var ex = Assert.Throws<CostProfileException>(() => CostProfile.Parse(doc.ToJsonString()));

        Assert.Equal("pteWriteNs", ex.ParameterName);
        Assert.Contains("negative", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("tlbiBatchSize", 0)]
    [InlineData("flushQueueEntries", 0)]
    [InlineData("iotlbEntries", 0)]
    public void Parse_ZeroWhereAtLeastOneNeeded_ErrorNamesParameter(string parameter, int value)
    {
        JsonObject doc = BuiltInJson("smmuv3-strict");
        doc["parameters"]![parameter]!["value"] = value;

        var ex = Assert.Throws<CostProfileException>(() => CostProfile.Parse(doc.ToJsonString()));

        Assert.Equal(parameter, ex.ParameterName);
    }

    [Fact]
    public void Parse_ParameterWithoutSource_ErrorNamesParameter()
    {
        JsonObject doc = BuiltInJson("smmuv3-strict");
        doc["parameters"]!["flushNs"]!.AsObject().Remove("source");

        var ex = Assert.Throws<CostProfileException>(() => CostProfile.Parse(doc.ToJsonString()));

        Assert.Equal("flushNs", ex.ParameterName);
        Assert.Contains("source", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_FractionalValue_ErrorNamesParameter()
    {
        JsonObject doc = BuiltInJson("smmuv3-strict");
        doc["parameters"]!["mapCallNs"]!["value"] = 10.5;

        var ex = Assert.Throws<CostProfileException>(() => CostProfile.Parse(doc.ToJsonString()));

        Assert.Equal("mapCallNs", ex.ParameterName);
    }

    [Fact]
    public void Parse_BadDefaultMode_ErrorListsValidModes()
    {
        JsonObject doc = BuiltInJson("smmuv3-strict");
        doc["defaultMode"] = "eager";

        var ex = Assert.Throws<CostProfileException>(() => CostProfile.Parse(doc.ToJsonString()));

        Assert.Contains("eager", ex.Message, StringComparison.Ordinal);
        Assert.Contains("strict, lazy", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_DistinctValues_EachPropertyReadsItsOwnParameter()
    {
        // Guards the table that ties JSON names to properties: give every parameter a different value.
        JsonObject doc = BuiltInJson("smmuv3-strict");
        JsonObject parameters = doc["parameters"]!.AsObject();
        for (int i = 0; i < CostProfile.ParameterNames.Count; i++)
        {
            string name = CostProfile.ParameterNames[i];
            parameters[name]!["value"] = name == "rangeInvalidation" ? JsonValue.Create(true) : JsonValue.Create(100 + i);
        }

        CostProfile p = CostProfile.Parse(doc.ToJsonString());

        long[] read =
        [
            p.MapCallNs, p.PteWriteNs, p.UnmapCallNs, p.PteClearNs, p.TlbiCommandNs, p.TlbiBatchSize, p.CmdSyncNs,
            p.RangeInvalidation ? 1 : 0, p.RangeTlbiNs, p.MaxTlbiOpsBeforeFullInvalidate, p.FullInvalidateNs, p.IovaAllocNs,
            p.IovaCachedAllocNs, p.IovaFreeNs, p.FlushQueueEntries, p.FlushTimeoutNs, p.FlushNs, p.IotlbEntries, p.PageWalkNs,
        ];
        string[] names =
        [
            "mapCallNs", "pteWriteNs", "unmapCallNs", "pteClearNs", "tlbiCommandNs", "tlbiBatchSize", "cmdSyncNs",
            "rangeInvalidation", "rangeTlbiNs", "maxTlbiOpsBeforeFullInvalidate", "fullInvalidateNs", "iovaAllocNs",
            "iovaCachedAllocNs", "iovaFreeNs", "flushQueueEntries", "flushTimeoutNs", "flushNs", "iotlbEntries", "pageWalkNs",
        ];
        for (int i = 0; i < names.Length; i++)
        {
            int index = IndexOf(names[i]);
            long expected = names[i] == "rangeInvalidation" ? 1 : 100 + index;
            Assert.Equal(expected, read[i]);
        }
    }

    [Fact]
    public void With_OneParameter_ChangesOnlyThatOne()
    {
        CostProfile original = CostProfile.Load("smmuv3-strict");

        CostProfile changed = original.With("pteWriteNs", 7).WithFlag("rangeInvalidation", true);

        Assert.Equal(7, changed.PteWriteNs);
        Assert.True(changed.RangeInvalidation);
        Assert.Equal("override", changed.GetSource("pteWriteNs"));
        Assert.Equal(original.MapCallNs, changed.MapCallNs);
        Assert.Equal(43, original.PteWriteNs);
        Assert.False(original.RangeInvalidation);
    }

    [Fact]
    public void With_UnknownOrNegative_Throws()
    {
        CostProfile p = CostProfile.Load("smmuv3-strict");
        Assert.Equal("nope", Assert.Throws<CostProfileException>(() => p.With("nope", 1)).ParameterName);
        Assert.Equal("mapCallNs", Assert.Throws<CostProfileException>(() => p.With("mapCallNs", -1)).ParameterName);
        Assert.Throws<CostProfileException>(() => p.With("rangeInvalidation", 1));
    }

    [Fact]
    public void ToJson_BuiltInProfile_ParsesBackToTheSameValues()
    {
        CostProfile p = CostProfile.Load("vtd-lazy");

        CostProfile back = CostProfile.Parse(p.ToJson());

        Assert.Equal(p.Name, back.Name);
        Assert.Equal(p.DefaultMode, back.DefaultMode);
        Assert.Equal(p.Parameters, back.Parameters);
    }

    private static int IndexOf(string name)
    {
        for (int i = 0; i < CostProfile.ParameterNames.Count; i++)
        {
            if (CostProfile.ParameterNames[i] == name)
            {
                return i;
            }
        }

        return -1;
    }

    private static JsonObject BuiltInJson(string name) => JsonNode.Parse(CostProfile.Load(name).ToJson())!.AsObject();
}

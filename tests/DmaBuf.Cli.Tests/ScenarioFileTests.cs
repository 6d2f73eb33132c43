using System.Text.Json;
using System.Text.Json.Nodes;

namespace DmaBuf.Cli.Tests;

/// <summary>Scenario files: the built-ins as shipped files, a user's own file, and the errors a broken file gets.</summary>
public sealed class ScenarioFileTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("dmabuf-scenario-");

    public void Dispose() => _dir.Delete(recursive: true);

    private static string Shipped(string name) => Path.Combine(AppContext.BaseDirectory, "scenarios", name);

    private static (int Code, string Out, string Err) Run(params string[] args) => Cli.Run(args);

    // Results without the host-measured figures (wall time, memory), keeping only the fields the golden documents have (newer fields are additions).
    private static JsonNode Comparable(JsonNode results, JsonNode? shape)
    {
        var copy = JsonNode.Parse(results.ToJsonString())!;
        foreach (JsonNode? r in copy.AsArray())
        {
            r!.AsObject().Remove("wallSeconds");
            r.AsObject().Remove("memory");
            if (shape is not null)
            {
                Trim(r, shape.AsArray()[0]!);
            }
        }

        return Sorted(copy);
    }

    // The same document with every object's keys in order, so that two documents compare by content.
    private static JsonNode Sorted(JsonNode node) => node switch
    {
        JsonObject o => new JsonObject(o.OrderBy(p => p.Key, StringComparer.Ordinal)
            .Select(p => KeyValuePair.Create(p.Key, p.Value is null ? null : Sorted(p.Value)))),
        JsonArray a => new JsonArray([.. a.Select(x => x is null ? null : Sorted(x))]),
        _ => JsonNode.Parse(node.ToJsonString())!,
    };

    private static void Trim(JsonNode node, JsonNode shape)
    {
        if (node is not JsonObject o || shape is not JsonObject s)
        {
            return;
        }

        foreach (string key in o.Select(p => p.Key).ToList())
        {
            if (!s.ContainsKey(key))
            {
                o.Remove(key);
            }
            else
            {
                Trim(o[key]!, s[key]!);
            }
        }
    }

    // Each golden file was written by the simulator before scenarios became files, with these options.
    public static TheoryData<string, string[]> Goldens => new()
    {
        { "playback", ["playback", "--frames", "120"] },
        { "playback-4k-shared", ["playback", "--frames", "60", "--resolution", "4k", "--topology", "shared", "--pool", "8"] },
        { "playback-vtd-budget", ["playback", "--frames", "120", "--profile", "vtd-lazy", "--cache-budget", "16M"] },
        { "playback-nosync", ["playback", "--frames", "60", "--no-sync", "--pool", "4"] },
        { "camera", ["camera", "--frames", "120"] },
        { "camera-lazy", ["camera", "--frames", "90", "--iommu", "lazy", "--seed", "7"] },
        { "churn", ["churn", "--frames", "200"] },
        { "churn-shared", ["churn", "--frames", "150", "--topology", "shared", "--iommu", "lazy"] },
    };

    [Theory]
    [MemberData(nameof(Goldens))]
    public void BuiltInScenario_GivesExactlyTheResultsOfBeforeItWasAFile(string golden, string[] args)
    {
        JsonNode expected = JsonNode.Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Golden", golden + ".json")))!["results"]!;
        (_, string output, _) = Run(["simulate", .. args, "--json"]);

        JsonNode actual = Comparable(JsonNode.Parse(output)!["results"]!, expected);

        Assert.Equal(Comparable(expected, null).ToJsonString(), actual.ToJsonString());
    }

    [Theory]
    [InlineData("playback")]
    [InlineData("camera")]
    [InlineData("churn")]
    public void ShippedFile_GivesExactlyTheBuiltIn_WithTheSameOptions(string name)
    {
        string[] options = ["--frames", "90", "--pool", "6", "--iommu", "lazy", "--json"];
        (int builtInCode, string builtIn, _) = Run(["simulate", name, .. options]);
        (int fileCode, string fromFile, _) = Run(["simulate", "--scenario-file", Shipped(name + ".json"), .. options]);

        Assert.Equal(0, builtInCode);
        Assert.Equal(0, fileCode);
        Assert.Equal(
            Comparable(JsonNode.Parse(builtIn)!["results"]!, null).ToJsonString(),
            Comparable(JsonNode.Parse(fromFile)!["results"]!, null).ToJsonString());
    }

    [Fact]
    public void PhoneExample_Runs_WithThreeConsumersAndEverySafetyCheckHeld()
    {
        (int code, string output, string error) = Run("simulate", "--scenario-file", Shipped("phone-camera.json"), "--frames", "40", "--json");

        Assert.True(code == 0, error);
        using JsonDocument doc = JsonDocument.Parse(output);
        Assert.Equal("phone-camera", doc.RootElement.GetProperty("scenario").GetString());
        Assert.Equal(4, doc.RootElement.GetProperty("settings").GetProperty("consumers").GetInt32() + 1);
        foreach (JsonElement r in doc.RootElement.GetProperty("results").EnumerateArray())
        {
            Assert.Equal(4, r.GetProperty("importers").GetInt32());
            Assert.Equal(40, r.GetProperty("safety").GetProperty("framesVerified").GetInt64());
        }

        // Encoder and NPU share one domain: remap maps each frame three times, domain-share twice (one per domain).
        JsonElement remap = doc.RootElement.GetProperty("results").EnumerateArray().Single(r => r.GetProperty("strategy").GetString() == "remap");
        Assert.Equal(40 * 4, remap.GetProperty("counters").GetProperty("mapCalls").GetInt64());
    }

    [Fact]
    public void Consumers_TakesTheFirstOnes_AndRefusesMoreThanTheScenarioHas()
    {
        (int code, string output, _) = Run("simulate", "playback", "--consumers", "1", "--frames", "30", "--strategy", "remap", "--json");
        (int tooMany, _, string error) = Run("simulate", "playback", "--consumers", "3");

        Assert.Equal(0, code);
        using JsonDocument doc = JsonDocument.Parse(output);
        Assert.Equal(2, doc.RootElement.GetProperty("results")[0].GetProperty("importers").GetInt32());
        Assert.Equal(2, tooMany);
        Assert.Contains("display, gpu", error, StringComparison.Ordinal);
    }

    private string Broken(Func<JsonNode, JsonNode?> edit)
    {
        JsonNode doc = JsonNode.Parse(File.ReadAllText(Shipped("phone-camera.json")))!;
        JsonNode changed = edit(doc) ?? doc;
        string path = Path.Combine(_dir.FullName, "broken.json");
        File.WriteAllText(path, changed.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return path;
    }

    public static TheoryData<string, string> BrokenEdits => new()
    {
        { "role", "$.devices[3].role: 'tpu' is not valid; valid: decoder, display, gpu, isp, encoder, npu." },
        { "group-device", "$.iommus[1].groups[0].devices[1]: 'npu0' is not a device; devices: isp, encoder, display, npu." },
        { "two-groups", "$.iommus[2].groups[0].devices[1]: device 'encoder' is already in IOMMU group mm-smmu/mm" },
        { "producer-reads", "$.pipeline.producer: 'encoder' has dma 'read' and cannot write frames" },
        { "unknown-property", "$.devices[0].bandwith: unknown property 'bandwith'; valid here: name, role, dma, bandwidth, coherent, chainFormat." },
        { "hold", "$.pipeline.consumers[1].holdMs: must be between 0 and 10000, not -5." },
        { "profile", "$.iommus[0].profile: Unknown cost profile 'smmuv9'. Valid names: smmuv3-strict, vtd-lazy" },
        { "resolution", "$.resolution: Resolution '4K UHD' is not valid" },
    };

    [Theory]
    [MemberData(nameof(BrokenEdits))]
    public void BrokenFile_NamesTheFileLinePathAndChoices_ExitsTwo(string what, string expected)
    {
        string file = Broken(doc =>
        {
            switch (what)
            {
                case "role": doc["devices"]![3]!["role"] = "tpu"; break;
                case "group-device": doc["iommus"]![1]!["groups"]![0]!["devices"]![1] = "npu0"; break;
                case "two-groups": doc["iommus"]![2]!["groups"]![0]!["devices"]!.AsArray().Add("encoder"); break;
                case "producer-reads": doc["pipeline"]!["producer"] = "encoder"; break;
                case "unknown-property": doc["devices"]![0]!["bandwith"] = 5; break;
                case "hold": doc["pipeline"]!["consumers"]![1]!["holdMs"] = -5; break;
                case "profile": doc["iommus"]![0]!["profile"] = "smmuv9"; break;
                default: doc["resolution"] = "4K UHD"; break;
            }

            return null;
        });
        string[] lines = File.ReadAllLines(file);
        int after = what == "two-groups" ? Array.FindIndex(lines, l => l.Contains("display-smmu", StringComparison.Ordinal)) : 0;
        string needle = what switch
        {
            "role" => "\"tpu\"",
            "group-device" => "\"npu0\"",
            "two-groups" => "\"encoder\"",
            "producer-reads" => "\"producer\"",
            "unknown-property" => "\"bandwith\"",
            "hold" => "-5",
            "profile" => "\"smmuv9\"",
            _ => "4K UHD",
        };
        int line = Array.FindIndex(lines, after, l => l.Contains(needle, StringComparison.Ordinal)) + 1;

        (int code, string output, string error) = Run("simulate", "--scenario-file", file);

        Assert.Equal(2, code);
        Assert.Equal("", output);
        Assert.Contains($"{file}:{line}: {expected}", error, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", error, StringComparison.Ordinal);
    }

    [Fact]
    public void SyntaxError_NamesTheLine_WithoutTheParsersOwnWording()
    {
        string path = Path.Combine(_dir.FullName, "syntax.json");
        File.WriteAllText(path, "{\n  \"name\": \"x\",\n  \"pool\": 4,,\n}\n");

        (int code, _, string error) = Run("simulate", "--scenario-file", path);

        Assert.Equal(2, code);
        Assert.Contains($"{path}:3:", error, StringComparison.Ordinal);
        Assert.Contains("not valid JSON", error, StringComparison.Ordinal);
        Assert.DoesNotContain("LineNumber", error, StringComparison.Ordinal);
    }

    [Fact]
    public void MissingFile_Directory_AndBoth_AreUsageErrors()
    {
        (int missing, _, string e1) = Run("simulate", "--scenario-file", Path.Combine(_dir.FullName, "nope.json"));
        (int directory, _, string e2) = Run("simulate", "--scenario-file", _dir.FullName);
        (int both, _, string e3) = Run("simulate", "playback", "--scenario-file", Shipped("camera.json"));
        (int neither, _, string e4) = Run("simulate");

        Assert.Equal((2, 2, 2, 2), (missing, directory, both, neither));
        Assert.Contains("does not exist", e1, StringComparison.Ordinal);
        Assert.Contains("is a directory", e2, StringComparison.Ordinal);
        Assert.Contains("not both", e3, StringComparison.Ordinal);
        Assert.Contains("--scenario-file", e4, StringComparison.Ordinal);
    }

    [Fact]
    public void ProfilePath_IsRelativeToTheScenarioFile()
    {
        File.Copy(Path.Combine(AppContext.BaseDirectory, "scenarios", "playback.json"), Path.Combine(_dir.FullName, "mine.json"));
        string text = File.ReadAllText(Path.Combine(_dir.FullName, "mine.json")).Replace("\"smmuv3-strict\"", "\"profiles/fast.json\"", StringComparison.Ordinal);
        File.WriteAllText(Path.Combine(_dir.FullName, "mine.json"), text);
        Directory.CreateDirectory(Path.Combine(_dir.FullName, "profiles"));
        JsonNode profile = JsonNode.Parse(Simulation.CostProfile.Load("smmuv3-strict").ToJson())!;
        profile["name"] = "fast";
        profile["parameters"]!["mapCallNs"]!["value"] = 1;
        File.WriteAllText(Path.Combine(_dir.FullName, "profiles", "fast.json"), profile.ToJsonString());

        (int code, string output, string error) = Run("simulate", "--scenario-file", Path.Combine(_dir.FullName, "mine.json"), "--frames", "30", "--strategy", "remap", "--json");
        (_, string reference, _) = Run("simulate", "playback", "--frames", "30", "--strategy", "remap", "--json");

        Assert.True(code == 0, error);
        using JsonDocument mine = JsonDocument.Parse(output);
        using JsonDocument theirs = JsonDocument.Parse(reference);
        Assert.Equal("fast", mine.RootElement.GetProperty("settings").GetProperty("profile").GetString());
        long fast = mine.RootElement.GetProperty("results")[0].GetProperty("simulated").GetProperty("mappingNs").GetInt64();
        long slow = theirs.RootElement.GetProperty("results")[0].GetProperty("simulated").GetProperty("mappingNs").GetInt64();
        Assert.Equal(slow - (90 * (1007 - 1)), fast); // 90 map calls, each 1,006 ns cheaper
    }
}

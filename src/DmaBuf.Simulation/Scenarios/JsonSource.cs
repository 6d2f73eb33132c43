using System.Globalization;
using System.Text;
using System.Text.Json;

namespace DmaBuf.Simulation;

/// <summary>
/// A JSON document being read by hand, so that every error can name the value's JSON path and line: System.Text.Json's
/// <see cref="JsonElement"/> knows neither. Lines come from a second walk with a reader that tracks the path.
/// </summary>
internal sealed class JsonSource
{
    private readonly byte[] _utf8;

    private JsonSource(string origin, byte[] utf8, JsonDocument document)
    {
        Origin = origin;
        _utf8 = utf8;
        Document = document;
    }

    public string Origin { get; }

    public JsonDocument Document { get; }

    /// <summary>Parses <paramref name="text"/>; a syntax error names the line and the path where it was found.</summary>
    public static JsonSource Parse(string text, string origin)
    {
        byte[] utf8 = Encoding.UTF8.GetBytes(text);
        try
        {
            var document = JsonDocument.Parse(utf8, new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
            return new JsonSource(origin, utf8, document);
        }
        catch (JsonException e)
        {
            string path = string.IsNullOrEmpty(e.Path) ? "$" : e.Path;
            int line = e.LineNumber is long l ? (int)l + 1 : 0;
            throw new ScenarioFileException(origin, path, line, $"not valid JSON ({SyntaxProblem(e)})");
        }
    }

    /// <summary>An error at the value <paramref name="path"/>, with its line.</summary>
    public ScenarioFileException Error(string path, string problem) => new(Origin, path, LineOf(path), problem);

    /// <summary>The 1-based line of the value at <paramref name="path"/> (its property name, for a member), or 0.</summary>
    public int LineOf(string path)
    {
        var reader = new Utf8JsonReader(_utf8, new JsonReaderOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
        var containers = new Stack<(bool IsArray, int Next, string Path)>();
        string? property = null;
        while (reader.Read())
        {
            string? here = null;
            if (reader.TokenType == JsonTokenType.PropertyName)
            {
                property = reader.GetString();
                if (containers.Peek().Path + "." + property == path)
                {
                    return LineAt(reader.TokenStartIndex);
                }

                continue;
            }

            if (reader.TokenType is JsonTokenType.EndObject or JsonTokenType.EndArray)
            {
                containers.Pop();
                continue;
            }

            if (containers.Count == 0)
            {
                here = "$";
            }
            else
            {
                (bool isArray, int next, string parent) = containers.Pop();
                here = isArray ? $"{parent}[{next}]" : $"{parent}.{property}";
                containers.Push((isArray, isArray ? next + 1 : next, parent));
            }

            if (here == path)
            {
                return LineAt(reader.TokenStartIndex);
            }

            if (reader.TokenType is JsonTokenType.StartObject or JsonTokenType.StartArray)
            {
                containers.Push((reader.TokenType == JsonTokenType.StartArray, 0, here));
            }
        }

        return 0;
    }

    private int LineAt(long index)
    {
        int line = 1;
        for (long i = 0; i < index; i++)
        {
            if (_utf8[i] == (byte)'\n')
            {
                line++;
            }
        }

        return line;
    }

    // System.Text.Json's messages end in "Path: $ | LineNumber: 3 | BytePositionInLine: 7." (or without the path);
    // we say those ourselves.
    private static string SyntaxProblem(JsonException e)
    {
        string message = e.Message;
        int cut = message.IndexOf(" Path:", StringComparison.Ordinal);
        int lineCut = message.IndexOf(" LineNumber:", StringComparison.Ordinal);
        cut = cut < 0 ? lineCut : lineCut < 0 ? cut : Math.Min(cut, lineCut);
        message = (cut >= 0 ? message[..cut] : message).TrimEnd('.', ' ');
        return e.BytePositionInLine is long column
            ? string.Create(CultureInfo.InvariantCulture, $"{message}, column {column + 1}")
            : message;
    }
}

/// <summary>An object of a <see cref="JsonSource"/> being read: typed getters whose errors name the path and line.</summary>
internal readonly struct JsonObjectReader
{
    private readonly JsonSource _source;
    private readonly JsonElement _element;

    public JsonObjectReader(JsonSource source, JsonElement element, string path, params string[] allowed)
    {
        _source = source;
        _element = element;
        Path = path;
        if (element.ValueKind != JsonValueKind.Object)
        {
            throw source.Error(path, $"must be an object, not {Describe(element)}.");
        }

        foreach (JsonProperty p in element.EnumerateObject())
        {
            if (p.Name != "$schema" && Array.IndexOf(allowed, p.Name) < 0)
            {
                throw source.Error($"{path}.{p.Name}", $"unknown property '{p.Name}'; valid here: {string.Join(", ", allowed)}.");
            }
        }
    }

    public string Path { get; }

    public JsonSource Source => _source;

    public bool Has(string name) => _element.TryGetProperty(name, out JsonElement v) && v.ValueKind != JsonValueKind.Null;

    public ScenarioFileException Error(string name, string problem) => _source.Error($"{Path}.{name}", problem);

    public string String(string name, string? fallback = null)
    {
        if (!_element.TryGetProperty(name, out JsonElement v) || v.ValueKind == JsonValueKind.Null)
        {
            return fallback ?? throw _source.Error(Path, $"'{name}' is missing.");
        }

        if (v.ValueKind != JsonValueKind.String || string.IsNullOrWhiteSpace(v.GetString()))
        {
            throw Error(name, $"must be a non-empty string, not {Describe(v)}.");
        }

        string text = v.GetString()!;
        int control = text.AsSpan().IndexOfAnyInRange('\u0000', '\u001f');
        if (control < 0)
        {
            control = text.AsSpan().IndexOfAnyInRange('\u007f', '\u009f');
        }

        if (control >= 0)
        {
            // Every string of a scenario is printed; a control character (an escape sequence, a line break) would reach
            // the terminal as it is.
            throw Error(name, $"must not contain control characters (U+{(int)text[control]:X4} at {control}).");
        }

        return text;
    }

    public string? OptionalString(string name) => Has(name) ? String(name) : null;

    /// <summary>One of <paramref name="choices"/> (their keys), mapped to its value.</summary>
    public T Choice<T>(string name, IReadOnlyDictionary<string, T> choices, string? fallback = null)
    {
        string text = String(name, fallback);
        return choices.TryGetValue(text, out T? value)
            ? value
            : throw Error(name, $"'{text}' is not valid; valid: {string.Join(", ", choices.Keys)}.");
    }

    public long Integer(string name, long min, long max, long? fallback = null)
    {
        if (!_element.TryGetProperty(name, out JsonElement v) || v.ValueKind == JsonValueKind.Null)
        {
            return fallback ?? throw _source.Error(Path, $"'{name}' is missing.");
        }

        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out long value))
        {
            throw Error(name, $"must be a whole number between {min} and {max}, not {Describe(v)}.");
        }

        return value >= min && value <= max
            ? value
            : throw Error(name, $"must be between {min} and {max}, not {value}.");
    }

    public double Number(string name, double min, double max, double fallback)
    {
        if (!_element.TryGetProperty(name, out JsonElement v) || v.ValueKind == JsonValueKind.Null)
        {
            return fallback;
        }

        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out double value) || !double.IsFinite(value))
        {
            throw Error(name, $"must be a number between {min} and {max}, not {Describe(v)}.");
        }

        return value >= min && value <= max
            ? value
            : throw Error(name, string.Create(CultureInfo.InvariantCulture, $"must be between {min} and {max}, not {value}."));
    }

    public bool Flag(string name, bool fallback)
    {
        if (!_element.TryGetProperty(name, out JsonElement v) || v.ValueKind == JsonValueKind.Null)
        {
            return fallback;
        }

        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Error(name, $"must be true or false, not {Describe(v)}."),
        };
    }

    public JsonObjectReader Object(string name, params string[] allowed)
    {
        if (!_element.TryGetProperty(name, out JsonElement v) || v.ValueKind == JsonValueKind.Null)
        {
            throw _source.Error(Path, $"'{name}' is missing.");
        }

        return new JsonObjectReader(_source, v, $"{Path}.{name}", allowed);
    }

    /// <summary>The elements of the array <paramref name="name"/>, each with its path; empty when absent.</summary>
    public IEnumerable<(JsonElement Element, string Path)> Elements(string name, bool required)
    {
        if (!_element.TryGetProperty(name, out JsonElement v) || v.ValueKind == JsonValueKind.Null)
        {
            if (required)
            {
                throw _source.Error(Path, $"'{name}' is missing.");
            }

            return [];
        }

        if (v.ValueKind != JsonValueKind.Array)
        {
            throw Error(name, $"must be an array, not {Describe(v)}.");
        }

        string path = $"{Path}.{name}";
        return v.EnumerateArray().Select((e, i) => (e, $"{path}[{i}]")).ToList();
    }

    public static string Describe(JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.String => $"the string \"{v.GetString()}\"",
        JsonValueKind.Number => $"the number {v.GetRawText()}",
        JsonValueKind.True or JsonValueKind.False => v.GetRawText(),
        JsonValueKind.Null => "null",
        JsonValueKind.Array => "an array",
        _ => "an object",
    };
}

"""Tool-call parsers: calls, content and errors of each format, and streams that match the whole parse."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lamps_jax.server.tool_parsers import (
    ERROR_CODES,
    TOOL_PARSER_NAMES,
    ContentDelta,
    ParsedOutput,
    ToolCallDelta,
    ToolCallParser,
    finish_reason,
    get_tool_parser,
)

HERMES = get_tool_parser("hermes")
LLAMA3 = get_tool_parser("llama3_json")


def body(name: str, arguments: object, key: str = "arguments") -> str:
    return json.dumps({"name": name, key: arguments}, ensure_ascii=False)


def hermes_output(*bodies: str) -> str:
    return "\n".join(f"<tool_call>\n{call}\n</tool_call>" for call in bodies)


def llama3_output(*bodies: str) -> str:
    return "<|python_tag|>" + "; ".join(bodies)


FORMATS = [
    pytest.param(HERMES, hermes_output, "arguments", id="hermes"),
    pytest.param(LLAMA3, llama3_output, "parameters", id="llama3_json"),
]


def calls(parsed: ParsedOutput) -> list[tuple[str, object]]:
    return [(call.name, json.loads(call.arguments)) for call in parsed.tool_calls]


def error_codes(parsed: ParsedOutput) -> list[str]:
    codes = [error.split(": ", 1)[0] for error in parsed.errors]
    assert set(codes) <= set(ERROR_CODES)
    return codes


def test_parsers_are_chosen_by_name():
    assert TOOL_PARSER_NAMES == ("hermes", "llama3_json")
    assert get_tool_parser("hermes").name == "hermes"
    with pytest.raises(ValueError, match="hermes, llama3_json"):
        get_tool_parser("mistral")


@pytest.mark.parametrize(("parser", "render", "key"), FORMATS)
def test_single_call(parser: ToolCallParser, render, key):
    parsed = parser.parse(render(body("get_weather", {"city": "Paris", "days": 3}, key)))
    assert parsed.content is None and parsed.errors == []
    assert calls(parsed) == [("get_weather", {"city": "Paris", "days": 3})]
    (call,) = parsed.tool_calls
    assert call.arguments == '{"city": "Paris", "days": 3}'
    assert call.id.startswith("call_") and len(call.id) > len("call_")
    assert finish_reason(parsed) == "tool_calls"


@pytest.mark.parametrize(("parser", "render", "key"), FORMATS)
def test_multiple_calls(parser: ToolCallParser, render, key):
    parsed = parser.parse(render(body("a", {"x": 1}, key), body("b", {}, key), body("a", {"x": 2}, key)))
    assert parsed.content is None and parsed.errors == []
    assert calls(parsed) == [("a", {"x": 1}), ("b", {}), ("a", {"x": 2})]
    assert len({call.id for call in parsed.tool_calls}) == 3


@pytest.mark.parametrize(("parser", "render", "key"), FORMATS)
def test_call_without_arguments_takes_an_empty_object(parser: ToolCallParser, render, key):
    parsed = parser.parse(render('{"name": "now"}'))
    assert calls(parsed) == [("now", {})] and parsed.tool_calls[0].arguments == "{}"


@pytest.mark.parametrize(("parser", "render", "key"), FORMATS)
def test_malformed_json_stays_in_content(parser: ToolCallParser, render, key):
    text = render('{"name": "f", "arguments": {"a": }}')
    parsed = parser.parse(text)
    assert parsed.tool_calls == [] and parsed.content == text
    assert error_codes(parsed) == ["invalid_json"]
    assert "Expecting value" in parsed.errors[0]
    assert finish_reason(parsed, "length") == "length"


@pytest.mark.parametrize(("parser", "render", "key"), FORMATS)
def test_missing_or_empty_name(parser: ToolCallParser, render, key):
    for call in ('{"arguments": {}}', '{"name": "", "arguments": {}}', '{"name": 3, "arguments": {}}'):
        parsed = parser.parse(render(call))
        assert parsed.tool_calls == [] and error_codes(parsed) == ["missing_name"]


@pytest.mark.parametrize(("parser", "render", "key"), FORMATS)
def test_call_that_is_not_an_object(parser: ToolCallParser, render, key):
    parsed = parser.parse(render('["f", {}]'))
    assert parsed.tool_calls == [] and error_codes(parsed) == ["not_an_object"]


@pytest.mark.parametrize(("parser", "render", "key"), FORMATS)
def test_arguments_given_as_a_json_string(parser: ToolCallParser, render, key):
    parsed = parser.parse(render(body("f", json.dumps({"q": "x"}), key)))
    assert calls(parsed) == [("f", {"q": "x"})] and parsed.errors == []
    for arguments in ("not json", "[1, 2]", 5, None, [1]):
        parsed = parser.parse(render(body("f", arguments, key)))
        assert parsed.tool_calls == [] and error_codes(parsed) == ["invalid_arguments"]


@pytest.mark.parametrize(("parser", "render", "key"), FORMATS)
def test_unknown_tool_is_an_error(parser: ToolCallParser, render, key):
    text = render(body("search", {"q": "x"}, key), body("rm_rf", {}, key))
    parsed = parser.parse(text, known_tools={"search"})
    assert calls(parsed) == [("search", {"q": "x"})]
    assert error_codes(parsed) == ["unknown_tool"] and "'rm_rf'" in parsed.errors[0]
    assert "rm_rf" in parsed.content
    assert calls(parser.parse(text)) == [("search", {"q": "x"}), ("rm_rf", {})]


@pytest.mark.parametrize(("parser", "render", "key"), FORMATS)
def test_nested_braces_and_braces_in_strings(parser: ToolCallParser, render, key):
    arguments = {"code": 'if x: {"a": "}"} \\ "{', "opts": {"deep": [1, {"x": "}}"}, {}]}}
    parsed = parser.parse(render(body("run", arguments, key), body("b", {"s": ";"}, key)))
    assert calls(parsed) == [("run", arguments), ("b", {"s": ";"})] and parsed.errors == []


@pytest.mark.parametrize(("parser", "render", "key"), FORMATS)
def test_unicode(parser: ToolCallParser, render, key):
    parsed = parser.parse(render(body("traduire", {"texte": "héllo 世界 🌍"}, key)))
    assert parsed.tool_calls[0].arguments == '{"texte": "héllo 世界 🌍"}'
    escaped = parser.parse(render('{"name": "f", "arguments": {"t": "\\u00e9\\ud83c\\udf0d"}}'))
    assert calls(escaped) == [("f", {"t": "é🌍"})]


@pytest.mark.parametrize(("parser", "render", "key"), FORMATS)
def test_non_json_constants_are_rejected(parser: ToolCallParser, render, key):
    parsed = parser.parse(render('{"name": "f", "arguments": {"x": NaN}}'))
    assert parsed.tool_calls == [] and error_codes(parsed) == ["invalid_json"]


@pytest.mark.parametrize(("parser", "render", "key"), FORMATS)
def test_unterminated_call_at_finish(parser: ToolCallParser, render, key):
    text = render('{"name": "f", "arguments": {"a": "long tex')
    text = text.removesuffix("\n</tool_call>")
    parsed = parser.parse(text)
    assert parsed.tool_calls == [] and parsed.content == text
    assert error_codes(parsed) == ["unterminated"]


def test_hermes_call_without_close_tag_but_complete_json_is_a_call():
    parsed = HERMES.parse('<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n')
    assert calls(parsed) == [("f", {"a": 1})] and parsed.errors == []


def test_hermes_content_around_calls():
    text = "Let me check.\n\n" + hermes_output(body("f", {})) + "\n\nIt will be sunny. " + hermes_output(body("g", {}))
    parsed = HERMES.parse(text)
    assert parsed.content == "Let me check.It will be sunny."
    assert calls(parsed) == [("f", {}), ("g", {})]


def test_hermes_plain_text_and_lookalike_tags_are_content():
    for text in ("Hello", "  two spaces  ", "a <tool> b <tool_call", "x </tool_call> y", ""):
        parsed = HERMES.parse(text)
        assert parsed.content == (text or None) and parsed.tool_calls == [] and parsed.errors == []
        assert finish_reason(parsed) == "stop"


def test_hermes_malformed_call_between_valid_ones():
    text = hermes_output(body("f", {}), "{oops}", body("g", {}))
    parsed = HERMES.parse(text)
    assert calls(parsed) == [("f", {}), ("g", {})]
    assert parsed.content == "<tool_call>\n{oops}\n</tool_call>" and error_codes(parsed) == ["invalid_json"]


def test_llama3_tag_is_optional_and_whitespace_is_allowed():
    for text in (
        body("f", {"a": 1}, "parameters"),
        "\n  " + body("f", {"a": 1}, "parameters") + " \n",
        "<|python_tag|> " + body("f", {"a": 1}, "parameters"),
        " <|python_tag|>" + body("f", {"a": 1}, "arguments"),
    ):
        parsed = LLAMA3.parse(text)
        assert calls(parsed) == [("f", {"a": 1})] and parsed.content is None and parsed.errors == [], text


def test_llama3_output_not_opening_with_a_call_is_content():
    for text in ('Sure: {"name": "f", "parameters": {}}', "<|python", "<b>bold</b>", "   "):
        parsed = LLAMA3.parse(text)
        assert parsed.content == text and parsed.tool_calls == [] and parsed.errors == []


def test_llama3_json_answer_that_is_not_a_call_stays_content():
    parsed = LLAMA3.parse('{"result": 5}')
    assert parsed.content == '{"result": 5}' and parsed.tool_calls == [] and error_codes(parsed) == ["missing_name"]


def test_llama3_text_after_the_calls_is_content():
    parsed = LLAMA3.parse(body("f", {}, "parameters") + "\nI asked the weather service.")
    assert calls(parsed) == [("f", {})] and parsed.content == "I asked the weather service."


def test_llama3_separator_or_tag_without_a_call():
    parsed = LLAMA3.parse(body("f", {}, "parameters") + "; ")
    assert calls(parsed) == [("f", {})] and parsed.content == "; " and error_codes(parsed) == ["unterminated"]
    parsed = LLAMA3.parse('<|python_tag|>brave_search.call(query="x")')
    assert parsed.content == '<|python_tag|>brave_search.call(query="x")' and error_codes(parsed) == ["invalid_json"]


def stream_chunks(parser: ToolCallParser, chunks: list[str], known_tools: set[str] | None = None):
    """Streams the chunks; returns the result, the deltas and the content streamed by the end of each feed."""
    stream = parser.stream(known_tools)
    deltas, content_after_feed = [], []
    for chunk in chunks:
        deltas += stream.feed(chunk)
        content_after_feed.append("".join(d.text for d in deltas if isinstance(d, ContentDelta)))
    deltas += stream.finish()
    return stream.result(), deltas, content_after_feed


def check_stream_matches_parse(parser: ToolCallParser, chunks: list[str], known_tools: set[str] | None = None):
    expected = parser.parse("".join(chunks), known_tools)
    result, deltas, content_after_feed = stream_chunks(parser, chunks, known_tools)
    assert result.content == expected.content
    assert [(c.name, c.arguments) for c in result.tool_calls] == [(c.name, c.arguments) for c in expected.tool_calls]
    assert result.errors == expected.errors
    final_content = expected.content or ""
    assert "".join(d.text for d in deltas if isinstance(d, ContentDelta)) == final_content
    assert all(d.text for d in deltas if isinstance(d, ContentDelta))
    for streamed in content_after_feed:  # held back until decided: never a partial tag the final content lacks
        assert final_content.startswith(streamed)
    call_deltas = [d for d in deltas if isinstance(d, ToolCallDelta)]
    assert [d.index for d in call_deltas] == sorted(d.index for d in call_deltas)
    for index, call in enumerate(result.tool_calls):
        first, *rest = [d for d in call_deltas if d.index == index]
        assert (first.id, first.name, first.arguments) == (call.id, call.name, "")
        assert all(d.id is None and d.name is None for d in rest)
        assert "".join(d.arguments for d in rest) == call.arguments
    assert {d.index for d in call_deltas} == set(range(len(result.tool_calls)))


ARGUMENTS = {"code": 'print("{}") ; x = {"k": [1, {"n": "}"}]}', "city": "Zürich 東京"}
STREAM_CASES = [
    (HERMES, "Let me check. <tool_call>\n" + body("f", ARGUMENTS) + "\n</tool_call>\n" + hermes_output(body("g", {}))),
    (HERMES, "a < b and <tool <tool_call>" + body("f", {}) + "</tool_call> then <tool_call>{bad}</tool_call> end"),
    (HERMES, "Thinking...\n\n" + hermes_output(body("f", json.dumps(ARGUMENTS)), body("rm", {}), '{"name": "f"')),
    (HERMES, "<tool_call>" + body("f", {"a": "</tool_cal"}) + "</tool_call>  \n  "),
    (HERMES, "plain text with trailing spaces   "),
    (LLAMA3, "<|python_tag|>" + body("f", ARGUMENTS, "parameters") + " ; " + body("g", {}, "parameters")),
    (LLAMA3, "  " + body("f", {}, "parameters") + ";" + body("rm", {}) + "\n\nDone.  "),
    (LLAMA3, '{"result": {"nested": "}"}} and {"name": "f"}'),
    (LLAMA3, "<|python_tag|>" + body("f", {"a": 1}, "parameters") + '; {"name": "g", "parameters": {"b": '),
    (LLAMA3, "<|python_ta and more"),
    (LLAMA3, "Hello {world}"),
]


STREAM_IDS = [f"{parser.name}-{number}" for number, (parser, _) in enumerate(STREAM_CASES)]


@pytest.mark.parametrize(("parser", "text"), STREAM_CASES, ids=STREAM_IDS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_stream_matches_parse_for_any_split(parser: ToolCallParser, text: str, data: st.DataObject):
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=10)))
    chunks = [text[start:end] for start, end in zip([0, *cuts], [*cuts, len(text)])]
    check_stream_matches_parse(parser, chunks, known_tools={"f", "g"})
    check_stream_matches_parse(parser, chunks)


@pytest.mark.parametrize(("parser", "text"), STREAM_CASES, ids=STREAM_IDS)
def test_stream_fed_one_character_at_a_time(parser: ToolCallParser, text: str):
    check_stream_matches_parse(parser, list(text), known_tools={"f", "g"})


FRAGMENTS = ["<tool_call>", "</tool_call>", "<tool", "<|python_tag|>", body("f", {"a": "}"}), "{", "}", '"', "\\"]
FRAGMENTS += [";", " ", "\n", "x", "é", '{"name": "g"}', "call>", "_"]


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(st.sampled_from(FRAGMENTS), max_size=12),
    data=st.data(),
    parser=st.sampled_from([HERMES, LLAMA3]),
)
def test_stream_matches_parse_on_arbitrary_text(parts: list[str], data: st.DataObject, parser: ToolCallParser):
    text = "".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=8)))
    chunks = [text[start:end] for start, end in zip([0, *cuts], [*cuts, len(text)])]
    check_stream_matches_parse(parser, chunks, known_tools={"f"})


def test_stream_holds_back_a_partial_tag_until_decided():
    stream = HERMES.stream()
    assert stream.feed("Hello <tool") == [ContentDelta("Hello")]
    assert stream.feed("box> and <") == [ContentDelta(" <toolbox> and")]
    header, arguments = stream.feed('tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>')
    assert header.index == 0 and header.name == "f" and header.id.startswith("call_")
    assert arguments == ToolCallDelta(0, arguments='{"a": 1}')
    assert stream.finish() == []
    assert stream.result().tool_calls[0].id == header.id

    stream = LLAMA3.stream()
    assert stream.feed(" <|python") == []
    assert stream.feed("_tag|>{") == []
    assert [d.name for d in stream.feed('"name": "f"}')] == ["f", None]
    stream = LLAMA3.stream()
    assert stream.feed("<|pyt") == []
    assert stream.feed("hon is fun") == [ContentDelta("<|python is fun")]


def test_stream_checks_known_tools():
    stream = HERMES.stream(known_tools={"f"})
    deltas = stream.feed(hermes_output(body("g", {}))) + stream.finish()
    assert all(isinstance(d, ContentDelta) for d in deltas)
    assert error_codes(stream.result()) == ["unknown_tool"]


def test_stream_is_used_once():
    stream = HERMES.stream()
    with pytest.raises(RuntimeError):
        stream.result()
    stream.finish()
    with pytest.raises(RuntimeError):
        stream.feed("x")
    with pytest.raises(RuntimeError):
        stream.finish()

"""Server-side tools on their own: the built-ins, loading ``--tools`` entries, the tool turn a chat template writes
after a call, finding calls in a model's text as it grows across results, and where results lie in the text."""

from __future__ import annotations

import asyncio
import datetime
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lamps_jax.detokenizer import OutputText
from lamps_jax.model.tokenizer import byte_tokenizer
from lamps_jax.request import ApiCall
from lamps_jax.server.server_tool_use import ServerToolUse
from lamps_jax.server.server_tools import BUILTIN_TOOLS, ServerTool, load_tools
from lamps_jax.server.tool_parsers import get_tool_parser
from lamps_jax.server.tool_turns import ToolTurns

# A Hermes-style template written for these tests: tools listed in a system turn, consecutive tool answers grouped
# in one user turn as <tool_response> blocks, calls written as <tool_call> blocks.
HERMES_STYLE_TEMPLATE = """
{%- if tools %}<|im_start|>system
<tools>{% for tool in tools %}{{ tool | tojson }}{% endfor %}</tools><|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == "tool" %}
{%- if loop.previtem is not defined or loop.previtem.role != "tool" %}<|im_start|>user\n{% endif %}<tool_response>
{{ message.content }}
</tool_response>
{%- if loop.nextitem is not defined or loop.nextitem.role != "tool" %}<|im_end|>
{% endif %}
{%- else %}<|im_start|>{{ message.role }}
{{ message.content }}
{%- for call in message.tool_calls or [] %}<tool_call>
{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


@pytest.fixture(scope="module")
def tokenizer():
    tokenizer = byte_tokenizer(512)
    tokenizer.chat_template = HERMES_STYLE_TEMPLATE
    return tokenizer


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("(2 + 3) * 4", "20"),
        ("7 // 2 + 7 % 2", "4"),
        ("2 ** 10", "1024"),
        ("-sqrt(16)", "-4.0"),
        ("max(1, pi)", "3.141592653589793"),
    ],
)
def test_the_calculator_does_arithmetic(expression: str, value: str) -> None:
    assert BUILTIN_TOOLS["calculator"](expression=expression) == value


@pytest.mark.parametrize(
    ("expression", "error"),
    [
        ("__import__('os').system('true')", "not arithmetic"),
        ("(1).__class__", "not arithmetic"),
        ("9 ** 9 ** 9", "exponents beyond 1000"),
        ("1 +", "not an arithmetic expression"),
        ("1" * 1001, "longer than 1000"),
        ("1 / 0", "division by zero"),
    ],
)
def test_the_calculator_refuses_what_is_not_plain_arithmetic(expression: str, error: str) -> None:
    with pytest.raises((ValueError, ZeroDivisionError), match=error):
        BUILTIN_TOOLS["calculator"](expression=expression)


def test_the_clock_tells_the_time_in_a_zone_and_refuses_an_unknown_one() -> None:
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    told = datetime.datetime.fromisoformat(BUILTIN_TOOLS["clock"](timezone="Asia/Tokyo"))
    assert told.utcoffset() == datetime.timedelta(hours=9) and told >= before
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        BUILTIN_TOOLS["clock"](timezone="Mars/Olympus")


async def lookup(key: str, default: int = 0) -> dict:
    """Looks a key up.

    The rest of this docstring is not the description."""
    return {"key": key, "value": default}


def test_a_function_becomes_a_tool_with_its_schema_and_checked_arguments() -> None:
    tool = ServerTool.from_function(lookup)
    assert tool.openai_tool()["function"]["description"] == "Looks a key up."
    assert tool.parameters["required"] == ["key"] and tool.parameters["properties"]["default"]["type"] == "integer"
    with pytest.raises(ValueError, match="invalid arguments: default: Input should be a valid integer"):
        asyncio.run(tool(key="a", default="many"))
    assert asyncio.run(tool(key="a")) == '{"key": "a", "value": 0}'


def test_tools_load_from_built_in_names_and_module_attributes() -> None:
    tools = load_tools(["clock", "tests.server.test_server_tools:lookup", "json:dumps"])
    assert list(tools) == ["clock", "lookup", "dumps"]
    with pytest.raises(ValueError, match="is neither a function nor a ServerTool"):
        load_tools(["tests.server.test_server_tools:HERMES_STYLE_TEMPLATE"])


def test_the_tool_turn_is_what_the_template_writes_after_a_call(tokenizer) -> None:
    conversation = [{"role": "user", "content": "6 * 7?"}]
    turns = ToolTurns(tokenizer, conversation, [BUILTIN_TOOLS["calculator"].openai_tool()])
    text = turns.text(ApiCall("calculator", {"expression": "6 * 7"}), "42")
    assert (
        text == "<|im_end|>\n<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )


def test_a_template_that_rewrites_the_past_cannot_write_tool_turns() -> None:
    tokenizer = byte_tokenizer(512)
    tokenizer.chat_template = (  # shows only the last message: adding a tool answer changes what came before
        "{{ messages[-1]['role'] }}: {{ messages[-1]['content'] }}{% if add_generation_prompt %}\nassistant:{% endif %}"
    )
    turns = ToolTurns(tokenizer, [{"role": "user", "content": "hi"}], None)
    with pytest.raises(ValueError, match="rewrites the conversation"):
        turns.check("clock")


def _detections(tool_use: ServerToolUse, text: OutputText, pieces: list[str]) -> list[ApiCall]:
    """Feeds ``pieces`` as if each were a token's text; after each detected call, a result comes back."""
    calls = []
    for piece in pieces:
        text.text += piece
        call = tool_use.detect(text)
        if call is not None:
            calls.append(call)
            text.text += "<result>"
            text.generated_start = len(text.text)
    return calls


@given(st.lists(st.integers(min_value=1, max_value=200), max_size=10))
def test_calls_to_server_tools_are_found_however_the_text_is_split(cuts: list[int]) -> None:
    output = (
        'First.<tool_call>{"name": "calculator", "arguments": {"expression": "1+1"}}</tool_call>'
        '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>Then<tool_call>{"name": "clock", '
        '"arguments": {"timezone": "UTC"}}</tool_call>done'
    )
    ends = {at + len("</tool_call>") for at in range(len(output)) if output.startswith("</tool_call>", at)}
    bounds = sorted({0, len(output), *ends, *(c % len(output) for c in cuts)})  # results follow the call's token
    pieces = [output[a:b] for a, b in itertools.pairwise(bounds)]
    tool_use = ServerToolUse(get_tool_parser("hermes"), ["calculator", "clock"], turns=None)
    calls = _detections(tool_use, OutputText(lambda ids: ""), pieces)
    assert calls == [ApiCall("calculator", {"expression": "1+1"}), ApiCall("clock", {"timezone": "UTC"})]


def test_a_forced_opening_is_read_before_the_models_text() -> None:
    parser = get_tool_parser("llama3_json")
    tool_use = ServerToolUse(parser, ["clock"], turns=None, opening=parser.forced_opening("clock"))
    calls = _detections(tool_use, OutputText(lambda ids: ""), ['{"timezone": ', '"UTC"}', "}", " ok"])
    assert calls == [ApiCall("clock", {"timezone": "UTC"})]


def test_the_text_of_each_result_is_located_in_the_output(tokenizer) -> None:
    text = OutputText(lambda ids: tokenizer.decode(ids))
    ids = list(tokenizer.encode("ab", add_special_tokens=False))
    text.update(ids, result_end=0)
    ids += tokenizer.encode("[42]", add_special_tokens=False)
    text.update(ids, result_end=len(ids))  # a result arrived after the model's "ab"
    ids += tokenizer.encode("cd", add_special_tokens=False)
    text.update(ids, result_end=len(ids) - 2)
    assert text.text == "ab[42]cd" and text.result_spans == [(2, 6)]

"""Tool calls through the OpenAI-compatible server and the official ``openai`` client, on the tiny model: parsed
tool calls (whole and streamed), tool_choice, a client-side round trip that resumes its session, server-side tools
that run inside the request, fail or hang. The model's output is scripted (``served_app.ScriptedAsyncLLM``): the
random tiny model would never write a tool call.
"""

from __future__ import annotations

import json

import openai
import pytest

from lamps_jax.server.errors import ApiError
from lamps_jax.server.protocol import ChatCompletionRequest
from lamps_jax.server.tool_choice import plan_tools
from lamps_jax.server.tool_parsers import get_tool_parser
from tests.server.served_app import (
    API_TIMEOUT,
    MODEL,
    SERVER_TOOLS,
    TOOL_CALL_TEXT,
    TOOLS,
    Served,
)


def test_a_tool_call_comes_back_as_tool_calls_whole_and_streamed(served: Served, client: openai.OpenAI) -> None:
    served.llm.script = TOOL_CALL_TEXT
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    whole = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me look."
    (call,) = choice.message.tool_calls
    assert (call.type, call.function.name, json.loads(call.function.arguments)) == (
        "function",
        "get_weather",
        {"city": "Paris"},
    )
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Let me look."
    calls = [tc for c in chunks for tc in c.choices[0].delta.tool_calls or ()]
    assert calls[0].id.startswith("call_") and calls[0].function.name == "get_weather"
    assert json.loads("".join(tc.function.arguments or "" for tc in calls)) == {"city": "Paris"}
    assert {tc.index for tc in calls} == {0} and chunks[-1].choices[0].finish_reason == "tool_calls"
    none = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, tool_choice="none")
    assert none.choices[0].message.content == TOOL_CALL_TEXT and none.choices[0].message.tool_calls is None


def test_tools_need_a_tool_call_parser_unless_tool_choice_is_none() -> None:
    request = ChatCompletionRequest(model=MODEL, messages=[{"role": "user", "content": "x"}], tools=TOOLS)
    with pytest.raises(ApiError) as raised:
        plan_tools(request, None, {})  # a server started without --tool-call-parser
    assert (raised.value.status, raised.value.code, raised.value.param) == (400, "tool_parser_not_configured", "tools")
    assert plan_tools(request.model_copy(update={"tool_choice": "none"}), None, {}).parser is None
    hermes = get_tool_parser("hermes")
    assert plan_tools(request, hermes, SERVER_TOOLS).forced_opening == ""
    required = plan_tools(request.model_copy(update={"tool_choice": "required"}), hermes, {})
    assert required.forced_opening == '<tool_call>\n{"name": "'
    assert required.template_tools == TOOLS


def test_a_client_side_tool_round_trip_resumes_the_session_and_prefills_only_the_appended_tokens(
    served: Served, client: openai.OpenAI
) -> None:
    served.llm.script = TOOL_CALL_TEXT
    session = {"session_id": "weather-1"}
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, extra_body=session)
    (call,) = first.choices[0].message.tool_calls
    served.llm.script = None
    messages += [
        {"role": "assistant", "content": TOOL_CALL_TEXT, "tool_calls": [call.model_dump()]},  # what the model wrote
        {"role": "tool", "tool_call_id": call.id, "content": "18 C, sunny"},
    ]
    prefilled = served.metric("lamps_jax_computed_tokens_total", 'position="prompt"')
    resumed = served.metric("lamps_jax_session_turns_total", 'prompt_kv="reused"')
    second = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=4, temperature=0.0, extra_body=session | {"ignore_eos": True}
    )
    history = first.usage.prompt_tokens + first.usage.completion_tokens  # turn 1's tokens, parked for the session
    appended = second.usage.prompt_tokens - history
    assert appended == len("\n<|tool|>18 C, sunny\n<|assistant|>")
    # turn 1's last token was sampled but never computed: it is prefilled with the appended ones
    assert served.metric("lamps_jax_computed_tokens_total", 'position="prompt"') - prefilled == appended + 1
    assert served.metric("lamps_jax_session_turns_total", 'prompt_kv="reused"') == resumed + 1


CALC_SCRIPT = (
    'Let me compute.<tool_call>{"name": "calculator", "arguments": {"expression": "6 * 7"}}</tool_call>It is 42.'
)


def test_a_server_side_tool_runs_inside_the_request_and_the_model_reads_its_answer(
    served: Served, client: openai.OpenAI
) -> None:
    served.llm.script = CALC_SCRIPT
    messages = [{"role": "user", "content": "What is 6 * 7?"}]
    whole = client.chat.completions.create(model=MODEL, messages=messages)
    choice = whole.choices[0]
    assert (choice.message.content, choice.finish_reason, choice.message.tool_calls) == (
        "Let me compute.It is 42.",
        "stop",
        None,
    )
    (call,) = choice.message.model_extra["server_tool_calls"]
    assert call["function"] == {"name": "calculator", "arguments": '{"expression": "6 * 7"}'}
    assert (call["status"], call["output"], call["error"], call["kv_strategy"]) == ("ok", "42", None, "preserve")
    # the answer went into the context as the chat template writes a tool message, and the model went on after it
    tool_turn = "\n<|tool|>42\n<|assistant|>"
    written = len(CALC_SCRIPT)
    assert (whole.usage.completion_tokens, whole.usage.prompt_tokens) == (
        written,
        len("<|user|>What is 6 * 7?\n<|assistant|>") + len(tool_turn),
    )
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Let me compute.It is 42."
    assert not any(c.choices[0].delta.tool_calls for c in chunks)
    last = chunks[-1].choices[0]
    assert last.finish_reason == "stop" and last.delta.model_extra["server_tool_calls"][0]["output"] == "42"


@pytest.mark.parametrize(
    ("tool", "arguments", "status", "error"),
    [
        ("failing_tool", {"reason": "no network"}, "error", "tool 'failing_tool' raised RuntimeError: no network"),
        ("hanging_tool", {}, "timeout", f"tool 'hanging_tool' timed out after {API_TIMEOUT} s"),
        ("calculator", {"expression": "1 +"}, "error", "not an arithmetic expression"),
        ("calculator", {"expr": "1"}, "error", "invalid arguments: expression: Missing required argument"),
    ],
)
def test_a_tool_that_fails_or_hangs_is_an_answer_the_model_reads_not_a_server_error(
    served: Served, client: openai.OpenAI, tool: str, arguments: dict, status: str, error: str
) -> None:
    call = json.dumps({"name": tool, "arguments": arguments})
    served.llm.script = f"<tool_call>{call}</tool_call>Sorry."
    answer = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "go"}])
    choice = answer.choices[0]
    assert (choice.message.content, choice.finish_reason) == ("Sorry.", "stop")
    (record,) = choice.message.model_extra["server_tool_calls"]
    assert record["status"] == status and error in record["error"] and record["output"] == f"error: {record['error']}"


def test_server_tools_can_be_left_out_and_a_client_call_still_comes_back(served: Served, client: openai.OpenAI) -> None:
    served.llm.script = CALC_SCRIPT
    messages = [{"role": "user", "content": "What is 6 * 7?"}]
    answer = client.chat.completions.create(model=MODEL, messages=messages, extra_body={"server_tools": []})
    assert answer.choices[0].message.content == CALC_SCRIPT  # no tools at all: plain text
    served.llm.script = (
        'Checking.<tool_call>{"name": "calculator", "arguments": {"expression": "1+1"}}</tool_call>'
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    )
    both = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS).choices[0]
    assert both.finish_reason == "tool_calls" and both.message.content == "Checking."
    assert [c.function.name for c in both.message.tool_calls] == ["get_weather"]
    assert [c["output"] for c in both.message.model_extra["server_tool_calls"]] == ["2"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_named_or_required_tool_choice_makes_the_output_a_call(
    served: Served, client: openai.OpenAI, stream: bool
) -> None:
    messages = [{"role": "user", "content": "Weather in Paris?"}]

    def ask(tool_choice) -> tuple[str, dict, str]:
        answer = client.chat.completions.create(
            model=MODEL, messages=messages, tools=TOOLS, tool_choice=tool_choice, stream=stream
        )
        if not stream:
            (call,) = answer.choices[0].message.tool_calls
            return call.function.name, json.loads(call.function.arguments), answer.choices[0].finish_reason
        chunks = list(answer)
        calls = [tc for c in chunks for tc in c.choices[0].delta.tool_calls or ()]
        arguments = json.loads("".join(tc.function.arguments or "" for tc in calls))
        return calls[0].function.name, arguments, chunks[-1].choices[0].finish_reason

    served.llm.script = '{"city": "Paris"}}</tool_call>'  # the model continues the forced opening
    named = {"type": "function", "function": {"name": "get_weather"}}
    assert ask(named) == ("get_weather", {"city": "Paris"}, "tool_calls")
    served.llm.script = 'get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    assert ask("required") == ("get_weather", {"city": "Paris"}, "tool_calls")
    served.llm.script = 'get_time", "arguments": {}}</tool_call>'  # a tool nobody offered: refused, not passed on
    with pytest.raises(openai.APIError) as raised:  # streamed: an error event after the headers
        ask("required")
    assert raised.value.code == "invalid_tool_call" and "'get_time' is not a known tool" in raised.value.message

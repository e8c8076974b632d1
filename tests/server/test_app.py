"""The OpenAI-compatible server through the official ``openai`` client, on the tiny model, in this process.

One server (uvicorn on a thread, a free 127.0.0.1 port) serves every test of the module. Its engine is real, but
a test can script what the next requests write (``ScriptedAsyncLLM.script``): a tool call the random tiny model
would never write, or a long simulated API call that keeps a request in flight while its client goes away. The
tiny byte tokenizer has a chat template (roles as ``<|role|>`` lines) that renders no tools, so chat runs on the
tiny model (SmolLM2's own template: test_launch.py).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from lamps_jax.async_llm import AsyncLLM
from lamps_jax.engine import LLMEngine
from lamps_jax.request import ApiCall, Segment
from lamps_jax.server.app import build_app
from lamps_jax.server.errors import ApiError
from lamps_jax.server.protocol import ChatCompletionRequest
from lamps_jax.server.server_tools import BUILTIN_TOOLS, ServerTool
from lamps_jax.server.tool_choice import plan_tools
from lamps_jax.server.tool_parsers import get_tool_parser
from tests.conftest import small_engine_config
from tests.server.harness import running, wait_for

MODEL = "tiny"
MAX_MODEL_LEN = 512
GREEDY = {"temperature": 0.0, "extra_body": {"ignore_eos": True}}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
TOOL_CALL_TEXT = 'Let me look.<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'


def long_call(tokenizer) -> tuple[Segment, ...]:
    """A script that writes "ok", then waits for a minute-long API call."""
    tokens = tuple(tokenizer.encode("ok", add_special_tokens=False))
    return Segment(len(tokens), ApiCall("slow", duration=60.0), token_ids=tokens), Segment(1)


class ScriptedAsyncLLM(AsyncLLM):
    """The real engine loop; while ``script`` is set, requests follow it instead of sampling: a text (its tokens
    are prescribed) or segments (``Segment``: prescribed lengths and simulated API calls)."""

    script: str | tuple[Segment, ...] | None = None

    def generate(self, prompt, sampling_params=None, req_id=None, segments=(), session_id=None, tool_use=None):
        if isinstance(self.script, str):
            tokens = tuple(self.engine.tokenizer.encode(self.script, add_special_tokens=False))
            segments = (Segment(len(tokens), token_ids=tokens),)
        elif self.script is not None:
            segments = self.script
        return super().generate(prompt, sampling_params, req_id, segments, session_id, tool_use)


@dataclasses.dataclass
class Served:
    url: str
    llm: ScriptedAsyncLLM

    @property
    def engine(self) -> LLMEngine:
        return self.llm.engine

    def metric(self, name: str, labels: str = "") -> float:
        """A sample's value on /metrics (0 when absent), e.g. ``metric("lamps_jax_computed_tokens_total",
        'position="prompt"')``."""
        text = httpx.get(f"{self.url}/metrics").text
        pattern = rf"^{re.escape(name)}{re.escape('{' + labels + '}') if labels else ''} (\S+)$"
        match = re.search(pattern, text, flags=re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    def wait_until_idle(self) -> None:
        """Until no request is in the engine (not waiting, running, paused); parked sessions may stay."""
        wait_for(lambda: not self.engine.scheduler.requests and not self.llm.num_waiting)

    def pages_outside_sessions(self) -> int:
        """Device pages in use that no parked session holds (read while the engine is idle)."""
        pool = self.engine.page_pool
        parked = sum(len(p.page_ids) for p in self.engine.scheduler.parked.values())
        return pool.num_usable - pool.num_free - parked


API_TIMEOUT = 5.0  # seconds before a tool call (or a simulated API call) counts as timed out


def failing_tool(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(reason)


def hanging_tool() -> str:
    """Never answers in time."""
    time.sleep(10 * API_TIMEOUT)
    return "too late"


SERVER_TOOLS = BUILTIN_TOOLS | {fn.__name__: ServerTool.from_function(fn) for fn in (failing_tool, hanging_tool)}


@pytest.fixture(scope="module")
def served(tiny_model) -> Iterator[Served]:
    config = small_engine_config(max_num_seqs=8, token_budget=16, max_model_len=MAX_MODEL_LEN, query_block=16)
    config = dataclasses.replace(
        config,
        api_timeout=API_TIMEOUT,
        scheduler=dataclasses.replace(config.scheduler, enable_prefix_caching=True),
    )
    llm = ScriptedAsyncLLM(LLMEngine(tiny_model, config), max_waiting=64)
    with running(build_app(llm, MODEL, tool_call_parser="hermes", server_tools=SERVER_TOOLS)) as url:
        yield Served(url, llm)
    pool = llm.engine.page_pool
    assert pool.num_free == pool.num_usable  # the lifespan shut the engine down: parked sessions released


@pytest.fixture
def client(served: Served) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0, timeout=60) as client:
        yield client
    served.llm.script = None


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list()] == [MODEL]


def test_health_answers(served: Served) -> None:
    assert httpx.get(f"{served.url}/health").status_code == 200


def test_a_streamed_completion_concatenates_to_the_whole_one_with_the_same_usage(client: openai.OpenAI) -> None:
    whole = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=12, **GREEDY)
    assert whole.choices[0].finish_reason == "length"
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (len("Once upon a time"), 12)
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + 12
    chunks = list(
        client.completions.create(
            model=MODEL,
            prompt="Once upon a time",
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
            **GREEDY,
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])


def test_a_prompt_of_token_ids_is_the_same_prompt(served: Served, client: openai.OpenAI) -> None:
    text = client.completions.create(model=MODEL, prompt="abc", max_tokens=6, **GREEDY).choices[0].text
    ids = served.engine.tokenizer.encode("abc", add_special_tokens=False)
    by_ids = client.completions.create(model=MODEL, prompt=ids, max_tokens=6, **GREEDY)
    assert by_ids.choices[0].text == text and by_ids.usage.prompt_tokens == 3


def test_return_token_ids_gives_the_prompt_and_output_ids_whole_and_streamed(
    served: Served, client: openai.OpenAI
) -> None:
    ids = {"ignore_eos": True, "return_token_ids": True}
    whole = client.completions.create(model=MODEL, prompt="abc", max_tokens=5, temperature=0.0, extra_body=ids)
    choice = whole.choices[0].model_dump()
    assert choice["prompt_token_ids"] == served.engine.tokenizer.encode("abc", add_special_tokens=False)
    assert len(choice["token_ids"]) == 5
    assert served.engine.tokenizer.decode(choice["token_ids"], skip_special_tokens=True) == choice["text"]
    chunks = [
        c.choices[0].model_dump()
        for c in client.completions.create(
            model=MODEL, prompt="abc", max_tokens=5, temperature=0.0, stream=True, extra_body=ids
        )
    ]
    assert chunks[0]["prompt_token_ids"] == choice["prompt_token_ids"]
    assert all("prompt_token_ids" not in c for c in chunks[1:])
    assert [t for c in chunks for t in c["token_ids"]] == choice["token_ids"]


def test_a_stop_string_ends_the_text_before_it(served: Served, client: openai.OpenAI) -> None:
    served.llm.script = "Hello world. Bye."
    answer = client.completions.create(model=MODEL, prompt="x", stop=["world", "zzz"])
    assert (answer.choices[0].text, answer.choices[0].finish_reason) == ("Hello ", "stop")


def test_a_chat_completion_uses_the_chat_template_and_streams_the_same_answer(client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    rendered = "<|system|>Be brief.\n<|user|>Hi\n<|assistant|>"
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, seed=3, temperature=0.8)
    choice = whole.choices[0]
    assert choice.message.role == "assistant" and choice.message.tool_calls is None
    assert whole.usage.prompt_tokens == len(rendered) and whole.usage.completion_tokens <= 8
    stream = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=8, seed=3, temperature=0.8, stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == choice.message.content
    assert chunks[-1].choices[0].finish_reason == choice.finish_reason


def test_without_a_session_id_nothing_is_parked(served: Served, client: openai.OpenAI) -> None:
    parked = served.metric("lamps_jax_sessions_parked")
    client.completions.create(model=MODEL, prompt="no session", max_tokens=3, **GREEDY)
    assert served.metric("lamps_jax_sessions_parked") == parked


def chat_body(**fields) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "x"}]} | fields


def tool_with_parameters(parameters: dict) -> dict:
    return {"type": "function", "function": {"name": "f", "parameters": parameters}}


def weather_call(call_id: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


BAD_REQUESTS = {  # name: (path, body, status, code, param)
    "invalid JSON": ("/v1/completions", b'{"model": "tiny", "prompt": ', 400, "json_invalid", None),
    "missing prompt": ("/v1/completions", {"model": MODEL}, 400, "missing", "prompt"),
    "unknown model": ("/v1/completions", {"model": "gpt-5", "prompt": "x"}, 404, "model_not_found", "model"),
    "prompt too long": (
        "/v1/completions",
        {"model": MODEL, "prompt": "x" * MAX_MODEL_LEN},
        400,
        "context_length_exceeded",
        "prompt",
    ),
    "negative max_tokens": (
        "/v1/completions",
        {"model": MODEL, "prompt": "x", "max_tokens": -1},
        400,
        "greater_than_equal",
        "max_tokens",
    ),
    "huge max_tokens": (
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 10**9},
        400,
        "context_length_exceeded",
        "max_completion_tokens",
    ),
    "token id outside the vocabulary": (
        "/v1/completions",
        {"model": MODEL, "prompt": [1, 10**6]},
        400,
        "invalid_request",
        None,
    ),
    "n > 1": ("/v1/completions", {"model": MODEL, "prompt": "x", "n": 2}, 400, "unsupported_value", "n"),
    "an unsupported field": (
        "/v1/completions",
        {"model": MODEL, "prompt": "x", "logprobs": 2},
        400,
        "extra_forbidden",
        "logprobs",
    ),
    "a tool schema that is not JSON Schema": (
        "/v1/chat/completions",
        chat_body(tools=[tool_with_parameters({"type": 5})]),
        400,
        "invalid_tool_schema",
        "tools.0.function.parameters",
    ),
    "a tool schema of a non-object": (
        "/v1/chat/completions",
        chat_body(tools=[tool_with_parameters({"type": "array"})]),
        400,
        "invalid_tool_schema",
        "tools.0.function.parameters",
    ),
    "two tools of one name": (
        "/v1/chat/completions",
        chat_body(tools=TOOLS * 2),
        400,
        "duplicate_tool",
        "tools.1.function.name",
    ),
    "a client tool named as a server tool": (
        "/v1/chat/completions",
        chat_body(tools=[{"type": "function", "function": {"name": "calculator"}}]),
        400,
        "duplicate_tool",
        "tools.0.function.name",
    ),
    "tool_choice naming an unknown function": (
        "/v1/chat/completions",
        chat_body(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}}),
        400,
        "unknown_tool",
        "tool_choice",
    ),
    "server_tools naming an unknown tool": (
        "/v1/chat/completions",
        chat_body(server_tools=["calculator", "search"]),
        400,
        "unknown_tool",
        "server_tools",
    ),
    "a tool message for an unknown call id": (
        "/v1/chat/completions",
        {
            "model": MODEL,
            "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": "", "tool_calls": [weather_call("call_1")]},
                {"role": "tool", "tool_call_id": "call_2", "content": "18 C"},
            ],
        },
        400,
        "unknown_tool_call_id",
        "messages.2.tool_call_id",
    ),
    "no such route": ("/v1/embeddings", {"model": MODEL, "input": "x"}, 404, "not_found", None),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_gets_an_openai_error_and_the_server_keeps_serving(
    served: Served, client: openai.OpenAI, case: str
) -> None:
    path, body, status, code, param = BAD_REQUESTS[case]
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(served.url + path, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)
    assert error["message"] and error["type"] == "invalid_request_error"
    assert client.completions.create(model=MODEL, prompt="ok", max_tokens=2, **GREEDY).usage.completion_tokens == 2


def test_an_overloaded_engine_answers_503_then_serves_again(served: Served, client: openai.OpenAI) -> None:
    served.llm.max_waiting = 0  # every new request finds the waiting queue full
    try:
        with pytest.raises(openai.InternalServerError) as raised:
            client.completions.create(model=MODEL, prompt="x", max_tokens=2)
    finally:
        served.llm.max_waiting = 64
    assert raised.value.status_code == 503 and raised.value.code == "engine_overloaded"
    assert raised.value.response.headers["Retry-After"] == "1"
    assert client.completions.create(model=MODEL, prompt="ok", max_tokens=2, **GREEDY).usage.completion_tokens == 2


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


def test_32_concurrent_clients_all_get_complete_answers(client: openai.OpenAI) -> None:
    def ask(index: int) -> tuple[str | None, int]:
        """Half stream; the last chunk of a stream carries its usage."""
        prompt, stream = f"client {index} says", bool(index % 2)
        options = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
        answer = client.completions.create(model=MODEL, prompt=prompt, max_tokens=6, **options, **GREEDY)
        if stream:
            chunks = list(answer)
            return [c.choices[0].finish_reason for c in chunks if c.choices][-1], chunks[-1].usage.completion_tokens
        return answer.choices[0].finish_reason, answer.usage.completion_tokens

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(ask, range(32)))
    assert answers == [("length", 6)] * 32


def test_a_client_that_disconnects_mid_stream_aborts_its_request_and_frees_its_pages(
    served: Served, client: openai.OpenAI
) -> None:
    served.wait_until_idle()
    held = served.pages_outside_sessions()
    aborted = served.metric("lamps_jax_requests_finished_total", 'finish_reason="abort"')
    served.llm.script = long_call(served.engine.tokenizer)
    with client.completions.create(model=MODEL, prompt="x" * 40, max_tokens=3, stream=True) as stream:
        assert next(iter(stream)).choices[0].text == "o"
        wait_for(lambda: served.engine.scheduler.paused)  # "ok" is written: the request waits for its API call
    served.wait_until_idle()
    assert served.pages_outside_sessions() == held
    assert served.metric("lamps_jax_requests_finished_total", 'finish_reason="abort"') == aborted + 1


def test_a_client_that_gives_up_on_a_whole_answer_aborts_its_request(served: Served, client: openai.OpenAI) -> None:
    served.wait_until_idle()
    held = served.pages_outside_sessions()
    served.llm.script = long_call(served.engine.tokenizer)
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=1.0).completions.create(model=MODEL, prompt="x" * 40, max_tokens=3)
    served.wait_until_idle()
    assert served.pages_outside_sessions() == held


def test_metrics_expose_the_engine_state_and_latencies(served: Served) -> None:
    text = httpx.get(f"{served.url}/metrics").text
    for sample in (
        'lamps_jax_requests{state="running"}',
        'lamps_jax_requests{state="waiting"}',
        'lamps_jax_requests{state="paused_api"}',
        'lamps_jax_kv_pages_in_use{pool="device"}',
        "lamps_jax_prefix_cache_pages_total",
        "lamps_jax_time_to_first_token_seconds_count",
        "lamps_jax_e2e_request_latency_seconds_count",
        "lamps_jax_inter_token_latency_seconds_count",
        'lamps_jax_kv_strategy_events_total{event="preserve"}',
        'lamps_jax_computed_tokens_total{position="prompt"}',
        'lamps_jax_computed_tokens_total{position="output"}',
    ):
        assert sample in text, sample
    assert served.metric("lamps_jax_e2e_request_latency_seconds_count") > 0
    assert served.metric("lamps_jax_inter_token_latency_seconds_count") > 0
    all_buckets = served.metric("lamps_jax_step_buckets", 'state="all"')
    assert all_buckets > 0 and served.metric("lamps_jax_step_buckets", 'state="ready"') == all_buckets


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


def test_a_client_without_a_session_id_reuses_the_kv_of_a_shared_prefix(served: Served, client: openai.OpenAI) -> None:
    served.wait_until_idle()
    history = [{"role": "user", "content": "Tell me about the sea. " * 4}]
    first = client.chat.completions.create(model=MODEL, messages=history, max_tokens=8, **GREEDY)
    reused = served.metric("lamps_jax_reused_prompt_tokens_total")
    history += [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "More."},
    ]
    client.chat.completions.create(model=MODEL, messages=history, max_tokens=2, **GREEDY)
    page = served.engine.config.cache.page_size
    # the first turn's prompt was cached page by page: the second finds at least its whole pages
    assert served.metric("lamps_jax_reused_prompt_tokens_total") - reused >= first.usage.prompt_tokens // page * page

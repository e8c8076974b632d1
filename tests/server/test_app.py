"""The OpenAI-compatible server through the official ``openai`` client, on the tiny model, in this process:
models, health, completions and chat (whole and streamed), token ids, stop strings, bad requests, overload,
concurrency, disconnects, metrics and prefix reuse (tool calls: test_app_tools.py).

One server (uvicorn on a thread, a free 127.0.0.1 port; ``served_app.py``, fixtures in ``conftest.py``) serves every
test of the module. The tiny byte tokenizer has a chat template (roles as ``<|role|>`` lines) that renders no tools,
so chat runs on the tiny model (SmolLM2's own template: test_launch.py).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.server.harness import wait_for
from tests.server.served_app import (
    GREEDY,
    MAX_MODEL_LEN,
    MODEL,
    TOOLS,
    Served,
    chat_body,
    long_call,
    tool_with_parameters,
    weather_call,
)


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

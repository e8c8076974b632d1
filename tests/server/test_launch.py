"""``lamps-jax serve`` before and around the app: what it refuses before loading a model, its imports on the run
dependencies alone, a server answering while it warms up, and a real model (SmolLM2) answering a chat through its own
template (slow)."""

from __future__ import annotations

import dataclasses
import re

import httpx
import openai
import pytest

from lamps_jax.async_llm import AsyncLLM
from lamps_jax.config import EngineConfig
from lamps_jax.engine import LLMEngine
from lamps_jax.server.app import build_app
from lamps_jax.server.launch import serve
from tests.conftest import small_engine_config
from tests.run_deps_only import make_run_site, run
from tests.server.harness import free_socket, running


def serve_tiny(host: str, port: int, tools: list[str], tool_call_parser: str | None = None) -> None:
    serve(
        "tiny",
        EngineConfig(),
        dtype="float32",
        seed=0,
        host=host,
        port=port,
        served_model_name=None,
        tool_call_parser=tool_call_parser,
        tools=tools,
        max_waiting=1,
        graceful_shutdown_s=0,
    )


def test_serve_refuses_an_address_in_use_before_loading_the_model() -> None:
    with free_socket() as sock:
        sock.listen()
        host, port = sock.getsockname()
        with pytest.raises(ValueError, match=f"cannot listen on {host}:{port}"):
            serve_tiny(host, port, tools=[])


@pytest.mark.parametrize(
    ("tools", "parser", "message"),
    [
        (["calculator", "no_such_module:f"], "hermes", "tool 'no_such_module:f' cannot be loaded"),
        (["json:dumps", "json:dumps"], "hermes", "two server tools are named 'dumps'"),
        (["search"], "hermes", "give a built-in (calculator, clock) or module:function"),
        (["clock"], None, "need --tool-call-parser"),
    ],
)
def test_serve_refuses_bad_tools_before_loading_the_model(tools: list[str], parser: str | None, message: str) -> None:
    with free_socket() as sock:
        host, port = sock.getsockname()
    with pytest.raises(ValueError, match=re.escape(message)):
        serve_tiny(host, port, tools, parser)


def test_the_server_imports_with_only_the_run_dependencies(tmp_path) -> None:
    result = run(make_run_site(tmp_path), "-c", "import lamps_jax.server.launch")
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_smollm2_answers_a_chat_through_its_own_template(smollm2_model) -> None:
    # the engine test's SmolLM2 setting: its compiled steps come from the executable store when that test ran first
    config = small_engine_config(
        page_size=16, num_pages=64, max_num_seqs=4, token_budget=64, max_model_len=256, query_block=16
    )
    llm = AsyncLLM(LLMEngine(smollm2_model, config))
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    with running(build_app(llm, "smollm2-135m")) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        answer = client.chat.completions.create(model="smollm2-135m", messages=messages, max_tokens=24, temperature=0)
    prompt = smollm2_model.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert answer.usage.prompt_tokens == len(smollm2_model.tokenizer.encode(prompt, add_special_tokens=False))
    assert "Paris" in answer.choices[0].message.content


def test_a_server_warming_up_in_the_background_answers_and_reports_its_buckets(tiny_model) -> None:
    # tests/engine/test_background_warmup.py's (and test_no_recompile.py's) setting: steps stored by either load
    base = small_engine_config(num_pages=48, max_num_seqs=8, token_budget=32)
    config = dataclasses.replace(base, warmup="background")
    engine = LLMEngine(tiny_model, config)
    with running(build_app(AsyncLLM(engine), "tiny")) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        answer = client.completions.create(model="tiny", prompt="hello", max_tokens=4, temperature=0)
        assert answer.usage.completion_tokens == 4
        engine.runner.wait_until_warm()
        metrics = httpx.get(f"{url}/metrics").text
    ready, total = engine.runner.buckets_ready
    assert ready == total > 1
    assert f'lamps_jax_step_buckets{{state="ready"}} {float(total)}' in metrics

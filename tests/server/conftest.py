"""Fixtures of the app tests: one server per test module (``served``), and an ``openai`` client of it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import openai
import pytest

from lamps_jax.engine import LLMEngine
from lamps_jax.server.app import build_app
from tests.conftest import small_engine_config
from tests.server.harness import running
from tests.server.served_app import API_TIMEOUT, MAX_MODEL_LEN, MODEL, SERVER_TOOLS, ScriptedAsyncLLM, Served


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

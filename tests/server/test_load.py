"""A bounded load test on loopback: 32 streaming clients hold multi-turn sessions with client-side tool calls against
an in-process server on the tiny model, and a quarter of them hang up mid-stream.

Every client sends a fixed number of turns and the whole load has a time limit. Each turn streams
``/v1/completions`` with the session's token ids so far; between turns the client "runs the tool" (a short sleep)
and appends its result. Parked sessions swap out to a host pool (fcfs with the swap strategy), so both pools see
traffic. Afterwards /metrics must account for every request once (finished by length, or aborted for the clients
that hung up), and once the sessions expire, and again after the engine shuts down, both page pools are empty.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter

import httpx

from lamps_jax.async_llm import AsyncLLM
from lamps_jax.bench.server_process import scrape_metrics
from lamps_jax.engine import LLMEngine
from lamps_jax.server.app import build_app
from tests.conftest import small_engine_config
from tests.server.harness import running, wait_for

CLIENTS = 32
TURNS = 3
TURN_TOKENS = 4
HANG_UP_TOKENS = 96  # a turn its client leaves after the first tokens: far from done when the server hears it
TOOL_RESULT = [7, 8, 9]  # what each tool call returns, appended before the next turn
TOOL_SECONDS = 0.02
SESSION_TTL_S = 1.0
TIME_LIMIT_S = 45.0
SMALL = small_engine_config(page_size=16, num_pages=64, max_num_seqs=8, token_budget=16, query_block=16)
CONFIG = dataclasses.replace(  # 63 device pages for 8 running requests of up to 8 pages: pressure at hang-up turns
    SMALL,
    scheduler=dataclasses.replace(SMALL.scheduler, policy="fcfs", kv_strategy="swap", num_host_pages=64),
    session_ttl=SESSION_TTL_S,
)


def hangs_up(index: int) -> bool:
    return index % 4 == 0


async def converse(client: httpx.AsyncClient, index: int) -> Counter:
    """One session; counts the turns that ran to the end ("length") and the one it hung up on ("abort")."""
    await asyncio.sleep(index * 0.01)
    tokens = [2 + index] + [1] * 15
    outcome = Counter()
    for turn in range(1, TURNS + 1):
        hang_up = hangs_up(index) and turn == 2
        body = {
            "model": "tiny",
            "prompt": tokens,
            "max_tokens": HANG_UP_TOKENS if hang_up else TURN_TOKENS,
            "temperature": 0.0,
            "ignore_eos": True,
            "stream": True,
            "return_token_ids": True,
            "session_id": f"load-{index}",
        }
        ids: list[int] = []
        async with client.stream("POST", "/v1/completions", json=body) as response:
            assert response.status_code == 200, await response.aread()
            async for line in response.aiter_lines():
                if line.startswith("data: {"):
                    ids += [t for choice in json.loads(line[6:])["choices"] for t in choice["token_ids"]]
                if hang_up and ids:
                    break  # leaving the block closes the connection mid-stream
        if hang_up:
            outcome["abort"] += 1
            return outcome
        assert len(ids) == TURN_TOKENS
        outcome["length"] += 1
        await asyncio.sleep(TOOL_SECONDS)
        tokens += ids + TOOL_RESULT
    return outcome


async def load(url: str) -> Counter:
    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=TIME_LIMIT_S, trust_env=False) as client:
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(converse(client, i) for i in range(CLIENTS))), timeout=TIME_LIMIT_S
        )
    return sum(outcomes, Counter())


def delta(before: dict[str, float], after: dict[str, float], prefix: str) -> dict[str, float]:
    """The samples named ``prefix...`` that changed, by their labels."""
    return {k.removeprefix(prefix): v - before.get(k, 0.0) for k, v in after.items() if k.startswith(prefix)}


def test_many_clients_with_tool_calls_and_hang_ups_leave_every_request_accounted_for_and_the_pools_empty(
    tiny_model,
) -> None:
    engine = LLMEngine(tiny_model, CONFIG)
    host_pool = engine.scheduler.host_pool
    with running(build_app(AsyncLLM(engine), "tiny")) as url:
        before = scrape_metrics(url)
        outcome = asyncio.run(load(url))
        wait_for(lambda: not engine.scheduler.requests and not engine.scheduler.parked)  # sessions expire
        after = scrape_metrics(url)
        assert engine.page_pool.num_free == engine.page_pool.num_usable
        assert host_pool.num_free == host_pool.num_usable
    assert engine.page_pool.num_free == engine.page_pool.num_usable  # and after the shutdown
    assert host_pool.num_free == host_pool.num_usable

    hung_up = sum(hangs_up(i) for i in range(CLIENTS))
    assert outcome == Counter(length=CLIENTS * TURNS - hung_up * (TURNS - 1), abort=hung_up)
    finished = delta(before, after, "lamps_jax_requests_finished_total")
    assert {k: v for k, v in finished.items() if v} == {
        '{finish_reason="length"}': outcome["length"],
        '{finish_reason="abort"}': outcome["abort"],
    }
    turns = delta(before, after, "lamps_jax_session_turns_total")
    assert sum(turns.values()) == outcome.total()  # every turn started once
    assert turns['{prompt_kv="reused"}'] > 0
    strategies = delta(before, after, "lamps_jax_kv_strategy_events_total")
    assert strategies['{event="session_swap"}'] > 0  # parked sessions went to the host pool

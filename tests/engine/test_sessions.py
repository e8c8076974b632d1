"""Resumable sessions on the real engine (tiny model): a conversation's next turn reuses the parked KV of the last
one when its prompt extends it, only the matching full pages when it does not, and nothing once it expired;
greedy outputs equal a cold run every time, and every page comes back."""

from __future__ import annotations

import dataclasses

import pytest

from lamps_jax.clock import VirtualClock
from lamps_jax.engine import LLMEngine
from lamps_jax.request import KVStrategy, SamplingParams
from tests.conftest import small_engine_config
from tests.engine.test_api_calls import drain
from tests.engine.test_prefix_cache import count_computed_tokens

PARAMS = SamplingParams(max_tokens=6, ignore_eos=True)
DECODES = PARAMS.max_tokens - 1  # tokens computed after the prompt: each sampled token but the last
PROMPT = list(range(20, 50))  # 30 tokens: 7 full pages of 4 and a partial one
TOOL_RESULT = [7, 8, 9, 10, 11]


def session_engine(model, caching: bool = False, kv_strategy: str = "preserve", ttl: float = 60.0) -> LLMEngine:
    """A tiny engine (pages of 4 tokens) on a virtual clock that counts the tokens the runner computes per request."""
    config = small_engine_config(num_pages=64)
    scheduler = dataclasses.replace(
        config.scheduler, enable_prefix_caching=caching, kv_strategy=kv_strategy, num_host_pages=64
    )
    engine = LLMEngine(model, dataclasses.replace(config, scheduler=scheduler, session_ttl=ttl), VirtualClock())
    return count_computed_tokens(engine)


def turn(engine: LLMEngine, prompt: list[int], session: str | None = "s") -> tuple[list[int], int]:
    """Runs one request to its end; its output tokens and the tokens the runner computed for it."""
    req_id = engine.add_request(prompt, PARAMS, session_id=session)
    (output,) = drain(engine).values()
    return output.token_ids, engine.computed_tokens[req_id]


def cold(model, prompt: list[int]) -> list[int]:
    engine = LLMEngine(model, small_engine_config())
    engine.add_request(prompt, PARAMS)
    (output,) = drain(engine).values()
    return output.token_ids


def held_pages(engine: LLMEngine) -> int:
    pool = engine.page_pool
    return pool.num_usable - pool.num_free


@pytest.mark.parametrize("kv_strategy", ["preserve", "swap"])
def test_a_turn_that_extends_the_last_one_computes_only_the_new_tokens(tiny_model, kv_strategy: str) -> None:
    engine = session_engine(tiny_model, kv_strategy=kv_strategy)
    first, _ = turn(engine, PROMPT)
    parked = engine.scheduler.parked["s"]
    assert parked.strategy is KVStrategy(kv_strategy) and held_pages(engine) > 0
    engine.step()  # a swap-out is issued here: the parked KV is then all on the host
    assert bool(parked.host_page_ids) == (kv_strategy == "swap") != bool(parked.page_ids)
    history = engine.session_tokens("s")
    assert history == PROMPT + first
    second, computed = turn(engine, history + TOOL_RESULT)
    assert computed == len(TOOL_RESULT) + 1 + DECODES  # the result and turn 1's last token, never computed
    assert second == cold(tiny_model, history + TOOL_RESULT)
    assert engine.release_session("s") and held_pages(engine) == 0


def test_an_edited_history_recomputes_from_the_first_unmatched_page(tiny_model) -> None:
    engine = session_engine(tiny_model)
    first, _ = turn(engine, PROMPT)
    edited = PROMPT[:10] + [99] + PROMPT[11:] + first + TOOL_RESULT  # token 10 differs: pages 0-1 still match
    second, computed = turn(engine, edited)
    assert computed == len(edited) - 8 + DECODES
    assert second == cold(tiny_model, edited)


def test_an_expired_session_is_released_and_the_next_turn_falls_back_to_the_prefix_cache(tiny_model) -> None:
    engine = session_engine(tiny_model, caching=True, ttl=5.0)
    first, _ = turn(engine, PROMPT)
    history = PROMPT + first
    engine.clock.advance(6.0)
    engine.step()  # expires the session: its pages are free again, the full ones still cached
    assert engine.session_tokens("s") is None and held_pages(engine) == 0
    second, computed = turn(engine, history + TOOL_RESULT)
    full_pages = (len(history) - 1) // 4  # the last token of turn 1 was never computed
    assert computed == len(history) + len(TOOL_RESULT) - 4 * full_pages + DECODES
    assert second == cold(tiny_model, history + TOOL_RESULT)


def test_a_request_without_the_session_or_an_aborted_turn_parks_nothing(tiny_model) -> None:
    engine = session_engine(tiny_model)
    turn(engine, PROMPT, session=None)
    assert not engine.scheduler.parked and held_pages(engine) == 0
    req_id = engine.add_request(PROMPT, PARAMS, session_id="s")
    engine.step()
    engine.abort_request(req_id)
    assert not engine.scheduler.parked and held_pages(engine) == 0

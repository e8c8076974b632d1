"""The paged engine's greedy output equals dense recompute without a cache."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lamps_jax.engine import LLMEngine
from lamps_jax.model.llama import forward_dense
from lamps_jax.request import SamplingParams
from tests.conftest import small_engine_config

PAD_TO = 128  # one compiled dense shape: causal attention makes trailing padding invisible


def dense_greedy(model, prompt: list[int], num_tokens: int) -> list[int]:
    tokens = list(prompt)
    for _ in range(num_tokens):
        padded = np.zeros(PAD_TO, np.int32)
        padded[: len(tokens)] = tokens
        tokens.append(int(jnp.argmax(_dense_last_logits(model.config)(model.params, padded, len(tokens)))))
    return tokens[len(prompt) :]


@functools.cache
def _dense_last_logits(cfg):
    return jax.jit(lambda params, tokens, length: forward_dense(params, tokens, cfg)[length - 1])


def _record(sched_out, preempted: list[str]):
    preempted.extend(sched_out.preempted_ids)
    return sched_out


def run_engine(engine: LLMEngine, prompts: list[list[int]], max_tokens: list[int]) -> dict[str, list[int]]:
    ids = [engine.add_request(p, SamplingParams(max_tokens=n, ignore_eos=True)) for p, n in zip(prompts, max_tokens)]
    outputs = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            outputs[out.req_id] = out.token_ids
        engine.page_pool.check_invariants()
    assert engine.page_pool.num_free == engine.page_pool.num_usable
    return [outputs[i] for i in ids]


@pytest.mark.parametrize(
    ("page_size", "num_pages"),
    [(4, 256), (16, 64), (4, 24)],  # the last one forces preemption and recompute
)
def test_paged_greedy_equals_dense(tiny_model, page_size: int, num_pages: int) -> None:
    rng = np.random.default_rng(page_size)
    lengths = [1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 23, 31, 33, 40, 47, 60, 64, 70]
    prompts = [list(rng.integers(1, tiny_model.config.vocab_size, size=n)) for n in lengths]
    max_tokens = [int(rng.integers(1, 12)) for _ in prompts]
    engine = LLMEngine(tiny_model, small_engine_config(page_size=page_size, num_pages=num_pages, token_budget=32))
    preempted = []
    schedule = engine.scheduler.schedule
    engine.scheduler.schedule = lambda: _record(schedule(), preempted)
    got = run_engine(engine, prompts, max_tokens)
    assert bool(preempted) == (num_pages == 24)
    for prompt, n, tokens in zip(prompts, max_tokens, got):
        assert tokens == dense_greedy(tiny_model, prompt, n)

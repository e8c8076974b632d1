"""Prefix caching on the real engine: shared prefixes are not recomputed, outputs are unchanged, a
discarded request finds its pages again, and memory pressure evicts only free pages."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np

from lamps_jax.engine import LLMEngine
from lamps_jax.request import ApiCall, SamplingParams, Segment
from tests.conftest import small_engine_config
from tests.engine.test_api_calls import drain, expected_tokens
from tests.engine.test_paged_vs_dense import dense_greedy


def cached_engine(model, num_pages: int = 64, caching: bool = True, kv_strategy: str = "preserve") -> LLMEngine:
    config = small_engine_config(num_pages=num_pages)  # pages of 4 tokens
    scheduler = dataclasses.replace(config.scheduler, enable_prefix_caching=caching, kv_strategy=kv_strategy)
    return count_computed_tokens(LLMEngine(model, dataclasses.replace(config, scheduler=scheduler)))


def count_computed_tokens(engine: LLMEngine) -> LLMEngine:
    """Counts, per request, the tokens the runner computes (``engine.computed_tokens``)."""
    computed = engine.computed_tokens = Counter()
    execute = engine.runner.execute

    def counting_execute(sched_out):
        for chunk in sched_out.scheduled:
            computed[chunk.req_id] += chunk.num_new_tokens
        return execute(sched_out)

    engine.runner.execute = counting_execute
    return engine


def test_a_second_request_with_a_cached_3_page_prefix_prefills_only_the_rest(tiny_model) -> None:
    engine = cached_engine(tiny_model)
    prefix = [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22]  # 3 full pages
    params = SamplingParams(max_tokens=5, ignore_eos=True)
    first = engine.add_request(prefix + [30, 31], params)
    drain(engine)
    second = engine.add_request(prefix + [40, 41, 42], params)
    out = drain(engine)[second]
    assert engine.computed_tokens[first] == 14 + 4  # prompt, then one token per decode step
    assert engine.computed_tokens[second] == 3 + 4  # only what follows the cached 12 tokens
    assert out.token_ids == dense_greedy(tiny_model, prefix + [40, 41, 42], 5)
    assert engine.scheduler.prefix_cache_pages == {"queried": 3 + 3, "hit": 3}
    assert engine.page_pool.num_free == engine.page_pool.num_usable


def test_a_discarded_request_finds_its_pages_in_the_cache_when_its_call_returns(tiny_model) -> None:
    prompt = list(range(1, 21))  # 5 pages
    segments = [Segment(6, ApiCall("sim", duration=0.01, result_token_ids=(7, 8, 9))), Segment(4)]
    runs = {}
    for caching in (False, True):
        engine = cached_engine(tiny_model, caching=caching, kv_strategy="discard")
        req_id = engine.add_request(prompt, SamplingParams(ignore_eos=True), segments=segments)
        runs[caching] = (drain(engine)[req_id].token_ids, engine.computed_tokens[req_id])
    assert runs[True][0] == runs[False][0] == expected_tokens(tiny_model, prompt, segments)
    # without the cache the whole 29-token context is recomputed on return; with it, only its last page
    assert runs[False][1] - runs[True][1] == 24


def test_memory_pressure_evicts_only_free_pages_and_outputs_stay_exact(tiny_model) -> None:
    engine = cached_engine(tiny_model, num_pages=24)
    rng = np.random.default_rng(1)
    stems = [[int(t) for t in rng.integers(1, 400, size=8)] for _ in range(3)]
    prompts = [stems[i % 3] + [int(t) for t in rng.integers(1, 400, size=int(rng.integers(1, 9)))] for i in range(12)]
    params = SamplingParams(max_tokens=6, ignore_eos=True)
    ids = [engine.add_request(p, params) for p in prompts]
    outputs = {}
    while engine.has_unfinished_requests():
        outputs.update({o.req_id: o for o in engine.step()})
        engine.page_pool.check_invariants()
        owned = [p for r in engine.scheduler.requests.values() for p in r.page_ids]
        assert all(engine.page_pool.ref_count(p) == owned.count(p) for p in set(owned))
    for req_id, prompt in zip(ids, prompts):
        assert outputs[req_id].token_ids == dense_greedy(tiny_model, prompt, 6)
    assert engine.scheduler.prefix_cache_pages["hit"] > 0
    assert engine.page_pool.num_free == engine.page_pool.num_usable

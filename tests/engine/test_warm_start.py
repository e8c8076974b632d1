"""A warm start: a second engine of the same model and code loads every compiled step from the executable store,
tracing and compiling nothing, and generates the first engine's tokens."""

from __future__ import annotations

from lamps_jax.engine import LLMEngine
from lamps_jax.request import SamplingParams
from lamps_jax.runner import num_compilations
from tests.conftest import small_engine_config


def _greedy_tokens(engine: LLMEngine) -> list[list[int]]:
    params = SamplingParams(max_tokens=6, temperature=0.0)
    ids = [engine.add_request(prompt, params) for prompt in ([5, 9, 13], list(range(1, 40)))]
    outputs = {}
    while engine.has_unfinished_requests():
        outputs |= {out.req_id: out.token_ids for out in engine.step()}
    return [list(outputs[i]) for i in ids]


def test_a_second_engine_loads_every_step_and_traces_nothing(tiny_model, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LAMPS_JAX_CACHE_DIR", str(tmp_path))
    # shapes of this test's own: an executable that an earlier test compiled and ran may not serialize (XLA CPU)
    config = small_engine_config(num_pages=23, max_num_seqs=2, token_budget=16)
    first = LLMEngine(tiny_model, config)
    shapes = len(first.runner.row_buckets[1]) + len(first.runner.row_buckets[first.runner.query_block])
    assert first.runner.executable_store.saved == shapes
    assert len(list(tmp_path.glob("executables/*/*.bin"))) == shapes
    traced = num_compilations()

    second = LLMEngine(tiny_model, config)

    assert num_compilations() == traced
    assert second.runner.executable_store.loaded == shapes and second.runner.executable_store.saved == 0
    assert _greedy_tokens(second) == _greedy_tokens(first)


def test_the_store_is_off_when_the_cache_folder_is_emptied(tiny_model, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LAMPS_JAX_CACHE_DIR", "")
    engine = LLMEngine(tiny_model, small_engine_config(num_pages=32, max_num_seqs=2, token_budget=32))
    assert engine.runner.executable_store is None

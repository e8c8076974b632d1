"""A background warm-up: the engine serves as soon as the one-row prefill bucket is ready, runs each batch with the
buckets ready so far (decode rows as prefill rows until the decode buckets come), and generates what a fully
warmed engine generates; the rest of the buckets compile and are stored meanwhile, and a failure surfaces."""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import Future

import pytest

from lamps_jax.cli import _serve_engine_config
from lamps_jax.cli_parser import build_parser
from lamps_jax.engine import LLMEngine
from lamps_jax.model.registry import LoadedModel
from lamps_jax.request import SamplingParams
from lamps_jax.runner import num_compilations
from lamps_jax.step_executables import QUICK_COMPILE, StepExecutables
from tests.conftest import small_engine_config

PROMPTS = ([5, 9, 13], list(range(1, 40)), [7] * 11, list(range(100, 121)), [3, 1, 4, 1, 5])


def _greedy_tokens(engine: LLMEngine) -> list[list[int]]:
    params = SamplingParams(max_tokens=6, temperature=0.0)
    ids = [engine.add_request(prompt, params) for prompt in PROMPTS]
    outputs = {}
    while engine.has_unfinished_requests():
        outputs |= {out.req_id: out.token_ids for out in engine.step()}
    return [list(outputs[i]) for i in ids]


@pytest.fixture(scope="module")
def full_engine(tiny_model) -> LLMEngine:
    # test_no_recompile.py's setting: one of the two files compiles these steps, the other loads them
    return LLMEngine(tiny_model, small_engine_config(num_pages=48, max_num_seqs=8, token_budget=32))


@pytest.mark.parametrize(
    "ready",
    [
        [(1, 8)],  # a background start: decode rows run as one-token prefill rows
        [(1, 8), (2, 8), (1, 1), (2, 1)],  # larger batches in calls of two rows
        [(1, 8), (4, 8), (1, 1)],  # a one-row bucket and a four-row one, nothing between
    ],
)
def test_a_partly_warmed_runner_generates_the_same_tokens(full_engine, ready) -> None:
    expected = _greedy_tokens(full_engine)
    runner = full_engine.runner
    all_ready = dict(runner._executables.ready)
    calls = []
    original_call = runner._call
    runner._call = lambda arrays: calls.append(arrays[0].token_ids.shape) or original_call(arrays)
    try:
        runner._executables.ready = {shape: all_ready[shape] for shape in ready}
        assert _greedy_tokens(full_engine) == expected
    finally:
        runner._executables.ready = all_ready
        runner._call = original_call
    assert set(calls) <= set(ready)


def test_rows_split_into_the_buckets_ready(full_engine) -> None:
    runner = full_engine.runner
    all_ready = dict(runner._executables.ready)
    try:
        runner._executables.ready = {(1, 8): None, (2, 8): None}  # prefill buckets: 1, 2, 4 rows
        assert runner._split(list(range(5)), 8) == [([0, 1], 2), ([2, 3], 2), ([4], 1)]
        runner._executables.ready = {(1, 8): None, (4, 8): None}
        assert runner._split(list(range(3)), 8) == [([0, 1, 2], 4)]
        assert runner._split(list(range(5)), 8) == [([0, 1, 2, 3], 4), ([4], 1)]
        assert runner._split([], 8) == []
    finally:
        runner._executables.ready = all_ready
    assert runner._split(list(range(2)), 8) == [([0, 1], 2)]  # fully warmed: the smallest bucket that fits


def test_a_background_start_serves_at_once_then_warms_up_and_stores_every_bucket(
    tiny_model, full_engine, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("LAMPS_JAX_CACHE_DIR", str(tmp_path))
    config = dataclasses.replace(
        small_engine_config(num_pages=48, max_num_seqs=8, token_budget=32), warmup="background"
    )
    engine = LLMEngine(tiny_model, config)
    try:
        assert (1, 8) in engine.runner._executables.ready
        assert _greedy_tokens(engine) == _greedy_tokens(full_engine)
        engine.runner.wait_until_warm()
        assert engine.runner.warm
    finally:
        engine.close()
    shapes = {(n, q) for q, buckets in engine.runner.row_buckets.items() for n in buckets}
    assert set(engine.runner._executables.ready) == shapes
    assert engine.runner.executable_store.saved == len(shapes)  # the optimized executables, each once
    traced = num_compilations()
    assert _greedy_tokens(engine) == _greedy_tokens(full_engine)
    assert num_compilations() == traced


class _FakeLowered:
    """Stands in for a lowered step: records the compiles asked of it, and can fail or block."""

    def __init__(self, shape, log: list, fail: bool = False, gate: threading.Event | None = None) -> None:
        self.shape, self.log, self.fail, self.gate = shape, log, fail, gate

    def compile(self, compiler_options=None):
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail:
            raise ValueError(f"cannot compile {self.shape}")
        kind = "quick" if compiler_options == QUICK_COMPILE else "optimized"
        self.log.append((self.shape, kind))
        return (self.shape, kind)


def _executables(log: list, failing=(), gate=None) -> StepExecutables:
    return StepExecutables(
        lambda shape: _FakeLowered(shape, log, shape in failing, gate), key_of=lambda shape: "", store=None
    )


def test_the_leading_buckets_compile_quickly_first_and_are_replaced_by_optimized_ones() -> None:
    log = []
    executables = _executables(log)
    shapes = [(1, 8), (1, 1), (2, 1), (2, 8)]
    executables.prepare(shapes, background=True, progress=False, quick=2)
    executables.wait()
    assert sorted(log) == sorted([*((s, "quick") for s in shapes[:2]), *((s, "optimized") for s in shapes)])
    assert executables.ready == {shape: (shape, "optimized") for shape in shapes}
    assert executables.complete


def test_a_failed_compile_is_raised_where_the_engine_waits() -> None:
    for shapes in ([(1, 8), (1, 1)], [(1, 8), (1, 1), (2, 1)]):  # the first fails: nothing waits for it forever
        with pytest.raises(RuntimeError, match="preparing the serving step"):
            _executables([], failing=[(1, 8)]).prepare(shapes, background=True, progress=False, quick=2)
    later = _executables([], failing=[(2, 1)])
    with pytest.raises(RuntimeError, match="preparing the serving step") as error:  # raised by whichever waits
        later.prepare([(1, 8), (1, 1), (2, 1)], background=True, progress=False, quick=2)
        later.wait()
    assert "cannot compile (2, 1)" in str(error.value.__cause__)


def test_close_drops_the_buckets_not_started() -> None:
    gate = threading.Event()
    log = []
    executables = _executables(log, gate=gate)
    shapes = [(1, 8)] + [(n, 1) for n in (1, 2, 4, 8, 16, 32)]
    thread = threading.Thread(target=executables.prepare, args=(shapes, True, False, 0))
    thread.start()
    while len(executables._compiles) < len(shapes):  # every bucket queued; the first ones compiling, held
        time.sleep(0.01)
    threading.Timer(0.5, gate.set).start()  # then the compiles running finish
    executables.close()
    thread.join(10)
    assert not executables._thread.is_alive() and not executables.complete
    assert 0 < len(log) < len(shapes)


def test_serve_and_generate_warm_up_in_the_background_unless_told_or_multi_host() -> None:
    parser = build_parser()
    generate = parser.parse_args(["generate", "--prompt", "hi"])
    assert generate.warmup == "background"
    serve = ["serve", "--model", "tiny"]
    assert _serve_engine_config(parser.parse_args(serve)).warmup == "background"
    assert _serve_engine_config(parser.parse_args([*serve, "--warmup", "full"])).warmup == "full"
    multi_host = [*serve, "--num-processes", "2", "--coordinator-address", "h:1", "--tensor-parallel", "2"]
    assert _serve_engine_config(parser.parse_args(multi_host)).warmup == "full"
    with pytest.raises(ValueError, match="warmup must be full or background"):
        dataclasses.replace(small_engine_config(), warmup="lazy")


def test_a_tokenizer_that_fails_to_load_stops_the_warm_up(tiny_model, full_engine) -> None:
    """A converted model's tokenizer loads on a thread while the runner warms up; when it fails, the engine raises
    its error and leaves no warm-up running behind it."""
    failed = Future()
    failed.set_exception(OSError("tokenizer files unreadable"))
    model = LoadedModel(tiny_model.config, tiny_model.params, failed)
    config = dataclasses.replace(
        small_engine_config(num_pages=48, max_num_seqs=8, token_budget=32), warmup="background"
    )
    with pytest.raises(OSError, match="unreadable"):
        LLMEngine(model, config)
    assert not [t for t in threading.enumerate() if t.name == "step-executables" and t.is_alive()]

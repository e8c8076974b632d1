"""bench-engine: waves, the roofline arithmetic, and one small run of the engine beside Hugging Face in its own
process (slow: it loads torch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lamps_jax.bench.decode_throughput import (
    _cells,
    _ModelSetup,
    long_prompt_token_ids,
    prompt_token_ids,
    run_decode_benchmark,
    waves_of,
)
from lamps_jax.bench.prompts import QUESTIONS
from lamps_jax.bench.roofline import Machine, roofline_seconds


def test_prompts_run_in_waves_of_the_batch_size() -> None:
    assert waves_of(5, 2) == [[0, 1], [2, 3], [4]]
    assert waves_of(4, 4) == [[0, 1, 2, 3]]


def test_more_prompts_than_questions_repeat_them_in_order(tiny_model) -> None:
    prompts = prompt_token_ids(tiny_model.tokenizer, len(QUESTIONS) + 3)
    assert len(prompts) == len(QUESTIONS) + 3 and len({tuple(p) for p in prompts}) == len(QUESTIONS)
    assert prompts[len(QUESTIONS) : len(QUESTIONS) + 3] == prompts[:3]


def test_prefill_prompts_are_exactly_the_length_asked_and_differ(tiny_model) -> None:
    prompts = long_prompt_token_ids(tiny_model.tokenizer, 4, 300)
    assert [len(p) for p in prompts] == [300] * 4
    assert len({tuple(p) for p in prompts}) == 4


def test_a_prefill_run_counts_prompt_tokens_and_a_decode_run_generated_ones() -> None:
    machine = Machine(bandwidth=10e9, flops=100e9)
    setup = _ModelSetup("m", [[1] * 500, [2] * 500], 1000, 4000, Path("."), None)
    results = {"lamps_jax": {"run_seconds": [2.0, 4.0], "startup_s": 1.0, "weights": "float32"}}
    prefill = _cells(setup, results, [1], 2, 1, machine, count_prompts=True)
    assert [c.tok_s for c in prefill] == [pytest.approx(375.0)]  # the median of 1000 tokens in 2 s and in 4 s
    decode = _cells(setup, results, [1], 2, 1, machine, count_prompts=False)
    assert [c.tok_s for c in decode] == [pytest.approx(0.75)]  # 2 generated tokens in 2 s and in 4 s


def test_the_roofline_is_bandwidth_bound_at_batch_one_and_compute_bound_past_the_ridge() -> None:
    machine = Machine(bandwidth=10e9, flops=100e9)  # ridge: 10 FLOP per byte
    weights, parameters = 400_000_000, 100_000_000  # f32: 4 bytes per parameter
    one = roofline_seconds(machine, weights, parameters, [[40]], max_tokens=3)
    assert one == pytest.approx(0.08 + 2 * 0.04)  # prefill of 40 tokens is compute bound, decodes read the weights
    wide = roofline_seconds(machine, weights, parameters, [[10] * 64], max_tokens=2)
    assert wide == pytest.approx(2 * 1e8 * 640 / 100e9 + 2 * 1e8 * 64 / 100e9)


def test_bad_settings_are_refused_before_anything_loads(tmp_path) -> None:
    with pytest.raises(ValueError, match="batch sizes must be between 1 and 4"):
        run_decode_benchmark(["tiny"], [8], 4, 1, tmp_path, num_prompts=4)
    with pytest.raises(ValueError, match="num_prompts must be between 1 and 1024"):
        run_decode_benchmark(["tiny"], [1], 4, 1, tmp_path, num_prompts=0)
    with pytest.raises(ValueError, match="engine dtypes must be among"):
        run_decode_benchmark(["tiny"], [1], 4, 1, tmp_path, num_prompts=4, dtypes=("int4",))
    with pytest.raises(ValueError, match="prompt_tokens must be >= 1"):
        run_decode_benchmark(["tiny"], [1], 1, 1, tmp_path, num_prompts=4, prompt_tokens=0)
    with pytest.raises(ValueError, match="unknown peer 'vllm'"):
        run_decode_benchmark(["tiny"], [1], 4, 1, tmp_path, num_prompts=4, peers=("vllm",))


@pytest.mark.slow
def test_a_small_run_measures_the_engine_and_hugging_face_side_by_side(tmp_path) -> None:
    """The w8a8 engine (float32's runs through bench-engine in tests/test_device_check.py) beside Hugging Face."""
    args = (["tiny"], [1, 2], 4, 1, tmp_path)
    cells = run_decode_benchmark(*args, num_prompts=2, peers=("hf", "llama_cpp"), dtypes=("w8a8",))
    engine = "lamps_jax w8a8"
    assert {(c.engine, c.batch) for c in cells} == {(engine, 1), (engine, 2), ("hf", 1), ("hf", 2)}
    assert {c.weights for c in cells if c.engine == engine} == {"w8a8"}
    assert all(c.tok_s > 0 and c.roofline_tok_s > 0 for c in cells)
    summary = json.loads((tmp_path / "decode_throughput.json").read_text())
    assert "tiny: llama_cpp not run: tiny has no GGUF file for llama.cpp" in summary["notes"]
    assert (tmp_path / "decode_throughput.md").read_text().startswith("Generated tokens/s: 2 chat prompts")

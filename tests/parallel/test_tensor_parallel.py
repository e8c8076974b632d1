"""tp = 1, 2, 4 on 8 fake CPU devices: the same greedy tokens, real shardings, no recompiles (one subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lamps_jax.config import CacheConfig
from lamps_jax.sim.capacity import kv_capacity_tokens, parameters_per_device
from tests.parallel.tp_worker import TIME_LIMIT_S, engine_config, model_config

pytestmark = pytest.mark.slow  # a subprocess that compiles three engines: about a minute on 2 cores

TENSOR_PARALLELS = (1, 2, 4)


@pytest.fixture(scope="module")
def runs() -> dict:
    """The worker's runs, once for the module (its engines compile 2 step shapes per tp)."""
    run = subprocess.run(
        [sys.executable, "-m", "tests.parallel.tp_worker", "engines", "--tp", ",".join(map(str, TENSOR_PARALLELS))],
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT_S + 30,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])["result"]


@pytest.mark.parametrize("tp", TENSOR_PARALLELS[1:])
def test_same_greedy_tokens_as_one_device(runs: dict, tp: int) -> None:
    one = runs["1"]
    for strategy in ("swap", "discard"):
        assert runs[str(tp)][strategy]["tokens"] == one[strategy]["tokens"], strategy
    assert one["swap"]["tokens"] == one["discard"]["tokens"]


def test_the_runs_swap_and_recompute(runs: dict) -> None:
    for run in runs.values():
        assert run["swap"]["swap_out_pages"] > 0 and run["swap"]["swap_in_pages"] == run["swap"]["swap_out_pages"]
        assert run["discard"]["swap_out_pages"] == 0
        assert run["discard"]["recomputed_tokens"] > run["swap"]["recomputed_tokens"]  # discarded KV recomputed


@pytest.mark.parametrize("tp", TENSOR_PARALLELS[1:])
def test_params_and_kv_are_split(runs: dict, tp: int) -> None:
    cfg, run = model_config(), runs[str(tp)]
    d, f, v, h = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.head_dim
    qkv = (cfg.num_heads + 2 * cfg.num_kv_heads) * h
    expected = {
        "wqkv": ([None, "tp"], [d, qkv // tp]),
        "wo": (["tp", None], [cfg.num_heads * h // tp, d]),
        "w_gate_up": ([None, "tp"], [d, 2 * f // tp]),
        "w_down": (["tp", None], [f // tp, d]),
        "attn_norm": ([], [d]),
        "embed": (["tp", None], [v // tp, d]),
        "lm_head": ([None, "tp"], [d, v // tp]),
    }
    for name, (spec, shape) in expected.items():
        assert run["params"][name] == {"spec": spec, "shard_shape": shape}, name
    num_pages, page_size = run["num_pages"], engine_config(tp, "swap").cache.page_size
    assert run["kv"] == {"spec": ["tp"], "shard_shape": [cfg.num_kv_heads // tp, num_pages, page_size, h]}


def test_no_recompiles_after_warmup(runs: dict) -> None:
    assert all(run["compiles_after_warmup"] == 0 for run in runs.values())


@pytest.mark.parametrize("tp", TENSOR_PARALLELS)
def test_simulated_capacity_matches_the_runner(runs: dict, tp: int) -> None:
    """The simulator's weights per device are the bytes the runner's shards hold, and the KV memory left
    gives the pages the engine allocates, to within one page."""
    cfg, run = model_config(), runs[str(tp)]
    assert parameters_per_device(cfg, tp) * 4 == run["param_bytes_per_device"]
    page_size = engine_config(tp, "swap").cache.page_size
    assert run["kv_bytes_per_device"] == run["num_pages"] * page_size * cfg.kv_bytes_per_token_per_device(tp)
    device_memory = 4 * 2**20
    tokens = kv_capacity_tokens(cfg, device_memory, utilization=1.0, tensor_parallel=tp)
    kv_budget = device_memory - run["param_bytes_per_device"]
    pages = CacheConfig(page_size=page_size, kv_memory_bytes=kv_budget).pages_for(cfg, tp)
    assert pages * page_size <= tokens < (pages + 1) * page_size

"""A calibration writes ``<platform>-<model>.json`` into a folder, and ``bench --profile`` takes its KV capacity."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from lamps_jax.bench.calibrate import device_kv_capacity, device_memory_bytes, profile_stem, write_profile
from lamps_jax.cli import main
from lamps_jax.scheduler.cost_model import PROFILES, load_cost_model
from lamps_jax.sim.capacity import kv_capacity_tokens, load_model_config
from tests.bench.test_sim_grid import write_small_trace


class FakeDevice:
    def __init__(self, stats: dict | None) -> None:
        self.stats = stats

    def memory_stats(self) -> dict | None:
        return self.stats


def test_the_profile_is_named_after_the_device_and_the_model() -> None:
    assert profile_stem("gpu", "smollm2-135m") == "gpu-smollm2-135m"
    assert profile_stem("cpu", "/models/SmolLM2.gguf") == "cpu-SmolLM2"


def test_the_kv_capacity_comes_from_the_memory_the_device_reports() -> None:
    tiny = load_model_config("tiny")
    assert device_memory_bytes(FakeDevice(None)) is None  # the CPU reports no memory size
    assert device_memory_bytes(FakeDevice({"bytes_limit": 2 * 10**9, "bytes_in_use": 5})) == 2 * 10**9
    assert device_kv_capacity(tiny, None) is None
    assert device_kv_capacity(tiny, 2 * 10**9) == kv_capacity_tokens(tiny, 2 * 10**9)


def test_write_profile_puts_the_profile_and_its_report_in_the_folder(tmp_path: Path) -> None:
    cost = dataclasses.replace(PROFILES["gptj-6b-a100"], name="calibrated-tiny-cpu")
    paths = write_profile(cost, {"device": "cpu"}, tmp_path / "results", "cpu-tiny")
    assert paths == [tmp_path / "results" / "cpu-tiny.json", tmp_path / "results" / "cpu-tiny.report.json"]
    assert load_cost_model(str(paths[0])) == cost
    assert json.loads(paths[1].read_text()) == {"device": "cpu"}


def bench_argv(tmp_path: Path, profile: Path) -> list[str]:
    trace = str(write_small_trace(tmp_path))
    argv = [
        "bench",
        "--trace",
        trace,
        "--rates",
        "2",
        "--window",
        "5",
        "--policies",
        "lamps",
        "--jobs",
        "1",
        "--seeds",
        "0",
    ]
    return argv + ["--profile", str(profile), "--output", str(tmp_path / "out")]


def test_bench_takes_the_kv_capacity_a_profile_carries(tmp_path: Path) -> None:
    profile = tmp_path / "cpu-tiny.json"
    dataclasses.replace(PROFILES["gptj-6b-a100"], name="calibrated", kv_capacity_tokens=3000).save(profile)
    assert main(bench_argv(tmp_path, profile)) == 0
    (row,) = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert row["finished"] == row["requests"] > 0


def test_bench_asks_for_kv_tokens_when_the_profile_has_no_kv_capacity(tmp_path: Path, capsys) -> None:
    profile = tmp_path / "cpu-tiny.json"
    dataclasses.replace(PROFILES["gptj-6b-a100"], name="calibrated", kv_capacity_tokens=None).save(profile)
    assert main(bench_argv(tmp_path, profile)) == 2
    err = capsys.readouterr().err
    assert f"cost profile {str(profile)!r} carries no KV capacity" in err and "pass --kv-tokens" in err
    assert main(bench_argv(tmp_path, profile) + ["--kv-tokens", "3000"]) == 0

"""A calibration writes the cost model ``<device>-<model>.json`` and its device profile ``.report.json``; ``bench
--profile`` takes either, with the KV capacity the profile carries."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from lamps_jax.bench import calibrate as calibration
from lamps_jax.bench.calibrate import (
    device_kv_capacity,
    device_memory_bytes,
    kv_budget,
    profile_stem,
    write_profile,
)
from lamps_jax.bench.device_profile import profile_paths, resolve_profile
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
    assert profile_stem("nvidia-h100-80gb-hbm3", "smollm2-135m") == "nvidia-h100-80gb-hbm3-smollm2-135m"
    assert profile_stem("cpu", "/models/SmolLM2.gguf") == "cpu-SmolLM2"


def test_the_output_is_a_folder_or_the_profiles_file(tmp_path: Path) -> None:
    assert profile_paths(tmp_path, "cpu-tiny") == (tmp_path / "cpu-tiny.json", tmp_path / "cpu-tiny.report.json")
    named = tmp_path / "profiles" / "laptop-tiny.json"
    assert profile_paths(named, "cpu-tiny") == (named, tmp_path / "profiles" / "laptop-tiny.report.json")
    with pytest.raises(ValueError, match="names a device profile"):
        profile_paths(tmp_path / "cpu-tiny.report.json", "cpu-tiny")


def test_the_kv_budget_is_the_memory_given_or_the_devices() -> None:
    tiny = load_model_config("tiny", dtype="float32")
    given = kv_budget(tiny, None, 256 * 2**20)
    assert given["tokens"] == 256 * 2**20 // tiny.kv_bytes_per_token == 65536  # 4096 bytes a token
    assert kv_budget(tiny, 2 * 10**9, None)["tokens"] == kv_capacity_tokens(tiny, 2 * 10**9)
    assert kv_budget(tiny, None, None) == {
        "tokens": None,
        "kv_bytes_per_token": 4096,
        "source": "unknown: the device reports no memory size",
    }
    with pytest.raises(ValueError, match="less than one token"):
        kv_budget(tiny, None, 100)


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


def device_profile(tmp_path: Path, kv_capacity_tokens: int | None = 3000) -> tuple[Path, Path]:
    cost = dataclasses.replace(PROFILES["gptj-6b-a100"], name="calibrated", kv_capacity_tokens=kv_capacity_tokens)
    report = {"model": "tiny", "dtype": "float32", "device": {"device_kind": "cpu"}, "cost_model": cost.to_dict()}
    profile, details = write_profile(cost, report, tmp_path / "profiles" / "cpu-tiny.json", "unused")
    return profile, details


def test_a_device_profile_resolves_to_the_cost_model_beside_it(tmp_path: Path) -> None:
    profile, details = device_profile(tmp_path)
    for given in (profile, details):
        resolved = resolve_profile(str(given))
        assert (resolved.label, resolved.source) == ("cpu-tiny", str(profile))
        assert resolved.device == {"device_kind": "cpu"} and resolved.details["model"] == "tiny"
    assert resolve_profile("gptj-6b-a100").device is None
    dataclasses.replace(load_cost_model(str(profile)), iter_base=1.0).save(profile)
    with pytest.raises(ValueError, match="differs from the cost model recorded"):
        resolve_profile(str(details))
    profile.unlink()
    with pytest.raises(ValueError, match="needs its cost model file beside it"):
        resolve_profile(str(details))
    with pytest.raises(ValueError, match="unknown profile"):
        resolve_profile(str(profile))


def test_bench_takes_a_device_profile(tmp_path: Path) -> None:
    _, details = device_profile(tmp_path)
    assert main(bench_argv(tmp_path, details)) == 0
    (row,) = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert row["profile"] == str(tmp_path / "profiles" / "cpu-tiny.json")
    assert row["kv_capacity_tokens"] is None and row["finished"] == row["requests"] > 0  # the profile's 3000 tokens


@pytest.mark.slow
def test_calibrate_writes_a_profile_that_bench_loads(tmp_path: Path, monkeypatch) -> None:
    """The whole calibration on the tiny preset over a shrunk grid (20-60 s, mostly compiling the engine), then
    ``bench --profile`` on both files it wrote."""
    monkeypatch.setattr(calibration, "DECODE_BATCHES", (1, 2))
    monkeypatch.setattr(calibration, "DECODE_CONTEXTS", (16, 64))
    monkeypatch.setattr(calibration, "PREFILL_SIZES", (16, 32))
    monkeypatch.setattr(calibration, "SWAP_PAGES", (1, 4))
    output = tmp_path / "profiles" / "cpu-tiny.json"
    argv = ["calibrate", "--model", "tiny", "--repeats", "1", "--kv-memory-mib", "16", "--output", str(output)]
    assert main(argv) == 0
    cost = load_cost_model(str(output))
    assert cost.name == "calibrated-tiny-cpu" and cost.kv_bytes_per_token == 4096  # 2 x 4 layers x 2 KV heads x 64 x 4
    assert cost.iter_per_token > 0 and cost.iteration_time(256) > cost.iteration_time(1)
    details = json.loads(output.with_name("cpu-tiny.report.json").read_text())
    assert len(details["swap_points"]) == 2  # SWAP_PAGES
    assert cost.kv_capacity_tokens == details["kv_budget"]["tokens"] == 16 * 2**20 // 4096
    assert details["device"]["platform"] == "cpu" and details["dtype"] == "float32" and details["model"] == "tiny"
    assert 0 < details["roofline"]["fractions"]["decode"]["mean"] <= details["roofline"]["fractions"]["decode"]["best"]
    assert all(p["roofline_fraction"] > 0 for p in details["iteration_points"])
    assert details["cost_model"] == cost.to_dict()
    for profile in (output, output.with_name("cpu-tiny.report.json")):
        assert main(bench_argv(tmp_path, profile)) == 0

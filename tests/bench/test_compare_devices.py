"""compare-devices: the saturation search, the swap-vs-compute arithmetic, and its tables against a hand-built case
of two synthetic devices (one that swaps for free, one whose swaps cost a second per token)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from lamps_jax.bench.compare_devices import (
    MAX_RATE,
    Setting,
    find_saturation,
    strategy_mix,
    swap_vs_compute,
    ttft_limit,
)
from lamps_jax.bench.sim_grid import SimPoint, run_point
from lamps_jax.cli import main
from lamps_jax.scheduler.cost_model import PROFILES
from tests.bench.test_sim_grid import write_small_trace


def test_the_saturation_search_brackets_the_rate_where_ttft_passes_the_limit() -> None:
    seen = []

    def ttft_at(rate: float) -> float:
        seen.append(rate)
        return 0.2 if rate <= 3.3 else 7.0

    found = find_saturation(ttft_at, limit=1.0, tolerance=0.05)
    assert seen[:3] == [1.0, 2.0, 4.0]  # doubled from 1 until it fails at 4
    assert found.sustained <= 3.3 < found.failed <= 1.05 * found.sustained
    assert [rate for rate, _ in found.probes] == seen
    down = find_saturation(lambda rate: 0.5 if rate <= 0.3 else 2.0)
    assert down.probes[:3] == ((1.0, 2.0), (0.5, 2.0), (0.25, 0.5)) and down.sustained <= 0.3 < down.failed
    with pytest.raises(ValueError, match="no saturation found"):
        find_saturation(lambda rate: 0.0)
    with pytest.raises(ValueError, match="exceeds 1 s even at"):
        find_saturation(lambda rate: 5.0)
    assert MAX_RATE >= 1e4


def test_swap_vs_compute_by_hand() -> None:
    cost = dataclasses.replace(
        PROFILES["gptj-6b-a100"],
        iter_per_token=1e-4,
        iter_per_context_token=0.0,
        iter_base=0.01,
        swap_per_token=1e-5,
        swap_base=1e-3,
        token_budget=256,
    )
    why = swap_vs_compute(cost, 512)
    step = 256 * 1e-4 + 0.01  # two chunks of 256 tokens
    assert why["recompute_s"] == pytest.approx(2 * step)
    assert why["swap_round_trip_s"] == pytest.approx(2 * (512 * 1e-5 + 1e-3))
    assert why["swap_over_recompute"] == pytest.approx(0.01224 / 0.0712)
    assert why["preserve_beats_discard_below_s"] == pytest.approx((step * 256 + step * 512) / 512)
    assert why["preserve_beats_swap_below_s"] == pytest.approx(0.01224)


def test_strategy_mix_counts_the_choice_at_the_call() -> None:
    row = {"strategy_preserve": 3, "strategy_swap": 1, "strategy_preserve->discard": 2}
    assert strategy_mix(row) == {
        "calls": 4,
        "preserve": 0.75,
        "discard": 0.0,
        "swap": 0.25,
        "preserve->discard": 0.5,
        "preserve->swap": 0.0,
    }


def synthetic_profiles(tmp_path: Path) -> tuple[Path, Path]:
    """``slowswap``: the GPT-J/A100 profile whose swaps take a second per token; ``freeswap``: every iteration
    term halved and swaps free. Both hold 4000 KV tokens."""
    slow = dataclasses.replace(
        PROFILES["gptj-6b-a100"], name="slowswap", swap_per_token=1.0, swap_budget_tokens=None, kv_capacity_tokens=4000
    )
    fast = dataclasses.replace(
        slow, name="freeswap", iter_per_token=slow.iter_per_token / 2, iter_base=slow.iter_base / 2, swap_per_token=0.0
    )
    paths = tmp_path / "slowswap.json", tmp_path / "freeswap.json"
    slow.save(paths[0])
    fast.save(paths[1])
    return paths


def test_compare_devices_tables_match_direct_runs_and_hand_derived_mix(tmp_path: Path, capsys) -> None:
    trace = str(write_small_trace(tmp_path))
    slow, fast = synthetic_profiles(tmp_path)
    out = tmp_path / "out"
    argv = ["compare-devices", str(slow), str(fast), "--trace", trace, "--fractions", "0.5,1", "--rates", "2"]
    argv += ["--policies", "vllm,infercept_swap", "--window", "20", "--jobs", "1", "--output", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "compare_devices.json").read_text())
    devices = {d["device"]: d for d in report["devices"]}
    assert list(devices) == ["slowswap", "freeswap"]

    def direct(profile: Path, rate: float, policy: str) -> dict:
        return run_point(SimPoint(trace, rate, policy, profile=str(profile), window=20.0)).row

    for name, profile in (("slowswap", slow), ("freeswap", fast)):
        device = devices[name]
        # the saturation rate: vllm's mean TTFT within 1 s there, past it at the first failing rate
        assert direct(profile, device["saturation_rate"], "vllm")["ttft_mean"] <= 1.0
        assert direct(profile, device["first_failing_rate"], "vllm")["ttft_mean"] > 1.0
        assert device["first_failing_rate"] <= 1.05 * device["saturation_rate"]
        # Table 4 from the trace's median context at a call: calls at 230..320 and 960..1320 tokens -> 640
        assert device["why"]["context_tokens"] == 640
        assert f"| {name} | 640 |" in printed
    # Half the compute time: twice the rate before the prefill queue (TTFT comes before any call) grows
    ratio = devices["freeswap"]["saturation_rate"] / devices["slowswap"]["saturation_rate"]
    assert 2 / 1.1 < ratio < 2 * 1.1

    rows = report["rows"]
    assert len(rows) == 2 * 3 * 2  # devices x (two fractions + one absolute rate) x policies
    for row in rows:
        profile = slow if row["device"] == "slowswap" else fast
        want = direct(profile, row["rate"], row["policy"])
        assert (row["e2e_mean"], row["ttft_p99"]) == (want["e2e_mean"], want["ttft_p99"])
        cells = f"| {row['policy']} | {want['e2e_mean']:.4g} | {want['e2e_p99']:.4g} | {want['ttft_mean']:.4g} |"
        assert cells in printed
        mix = strategy_mix(want)
        if row["policy"] == "vllm":  # vLLM discards the KV of every paused call
            assert mix["discard"] == 1.0 and mix["calls"] > 0
        elif row["device"] == "freeswap":  # a free swap wastes nothing: no call is preserved, each swaps where the
            assert mix["preserve"] == 0.0 and mix["swap"] > 0.9  # host holds no part of its context yet
            assert mix["swap"] == 1.0 or row["rate"] > 2
        else:  # a swap of hundreds of seconds is never the cheapest
            assert mix["swap"] == 0.0
        assert row["share_swap"] == mix["swap"]
    for fraction in ("0.5x saturation", "1x saturation", "2 requests/s"):
        share = next(
            r["share_swap"]
            for r in rows
            if (r["device"], r["policy"]) == ("freeswap", "infercept_swap")
            and r["rate_set_as"] == ("absolute" if fraction == "2 requests/s" else fraction)
        )
        line = f"infercept_swap at {fraction}: swap {share:.0%} of the paused calls on freeswap vs 0% on slowswap"
        assert line in printed
    assert "vllm at" not in printed.split("Where the strategy mix differs")[1]  # the same on both devices
    assert f"Setting: trace {trace}, window 20 s, policies vllm, infercept_swap, seeds 0, rates 0.5, 1 x" in printed
    for name in ("compare_devices.md", "compare_devices.csv", "compare_devices_latency.png", "compare_devices_mix.png"):
        assert (out / name).stat().st_size > 0 and f"wrote {out / name}\n" in printed


def test_compare_devices_rejects_bad_input_before_running(tmp_path: Path, capsys) -> None:
    assert main(["compare-devices", "gptj-6b-a100", "--output", str(tmp_path)]) == 2
    assert "at least two profiles" in capsys.readouterr().err
    assert main(["compare-devices", "gptj-6b-a100", "no-such-device", "--output", str(tmp_path)]) == 2
    assert "unknown profile 'no-such-device'" in capsys.readouterr().err
    assert main(["compare-devices", "gptj-6b-a100", "llama31-8b-h100", "--fractions", "0,1"]) == 2
    assert "must be numbers > 0" in capsys.readouterr().err
    assert main(["compare-devices", "gptj-6b-a100", "llama31-8b-h100", "--policies", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_arrivals_set_each_runs_window_from_its_rate() -> None:
    setting = Setting(arrivals=600)
    assert setting.point("vllm", 4.0, "gptj-6b-a100", None, 0).window == 150.0
    assert setting.point("vllm", 0.5, "gptj-6b-a100", None, 0).window == 1200.0
    assert Setting().point("vllm", 4.0, "gptj-6b-a100", None, 0).window == 600.0
    with pytest.raises(ValueError, match="arrivals must be >= 1"):
        Setting(arrivals=0)


def test_a_device_too_slow_for_one_second_ttft_saturates_at_its_slo() -> None:
    setting = Setting()
    assert ttft_limit(PROFILES["gptj-6b-a100"], setting) == 1.0  # 5 x 154.8 ms idle prefill < 1 s
    slow = dataclasses.replace(PROFILES["gptj-6b-a100"], iter_per_token=100 * 0.0463e-3)
    # 2,048 prompt tokens in six chunks of <= 384 at 4.63 ms a token + 10 ms each, five times over
    assert ttft_limit(slow, setting) == pytest.approx(5 * (2048 * 4.63e-3 + 6 * 0.01))

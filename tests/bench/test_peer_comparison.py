"""bench-peers: the goals table reads the best peer per metric, and the five stages run end to end, and
a stage left out is read from the folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import lamps_jax.bench.peer_comparison as peer_comparison
from lamps_jax.bench.peer_comparison import NOISE, OURS, PEERS, goal_lines


def _row(rate: float, policy: str, e2e: float, p99: float, goodput: float, noise: float = 0.0) -> dict:
    """A run whose engine added 40% of its mean E2E to the API calls and finished 3 requests per second."""
    return {
        "rate": rate,
        "policy": policy,
        "length_noise": noise,
        "e2e_mean": e2e,
        "e2e_p99": p99,
        "goodput_rps": goodput,
        "delay_mean": 0.4 * e2e,
        "throughput_rps": 3.0,
    }


def test_each_goal_compares_against_the_best_peer_for_that_metric() -> None:
    special = {"lamps": (90.0, 500.0, 2.0), "infercept": (95.0, 380.0, 1.0), OURS: (76.0, 380.0, 2.6)}
    compared = [
        _row(rate, p, *special.get(p, (100.0, 400.0, 1.0))) for rate in (10.0, 12.5, 15.0) for p in (*PEERS, OURS)
    ]
    noisy = [_row(r, OURS, 76.0, 380.0, 2.6, n) for r in (10.0, 12.5, 15.0) for n in (0.0, NOISE)]
    lines = goal_lines("multi", "infercept", 10.0, compared, noisy)
    assert len(lines) == 3
    assert "1x infercept's 10 = 10/s" in lines[0] and "1.5x infercept's 10 = 15/s" in lines[2]
    assert "76 vs lamps 90: 0.844 (met); API time alone 0.507" in lines[0]  # the best mean is lamps's; 0.6 * 76 / 90
    assert "380 vs infercept 380 (met)" in lines[0]  # the best p99 is infercept's; equal meets it
    assert "2.6 vs lamps 2: 1.30x (met); at most 1.50x" in lines[0]  # throughput 3 / lamps's goodput 2
    assert "+0.0% (met)" in lines[0]


def test_a_missed_goal_says_so() -> None:
    compared = [_row(10.0, p, 100.0, 400.0, 1.0) for p in PEERS] + [_row(10.0, OURS, 90.0, 410.0, 1.1)]
    noisy = [_row(10.0, OURS, 90.0, 410.0, 1.1), _row(10.0, OURS, 110.0, 410.0, 1.1, NOISE)]
    (line,) = goal_lines("one", "lamps", 10.0, compared, noisy)  # one load factor per distinct rate
    assert ": 0.900 (missed)" in line and "410 vs vllm_apc 400 (missed)" in line
    assert "1.10x (missed)" in line and "+22.2% (missed)" in line


def test_every_stage_writes_its_tables_and_the_goals(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(peer_comparison, "PEERS", ("infercept", "lamps"))
    monkeypatch.setattr(peer_comparison, "WORKLOADS", {"multi": peer_comparison.Workload("multi", (5, 40), 2048, 4.0)})
    lines = peer_comparison.run_peer_comparison(tmp_path, ["multi"], seeds=(0,), jobs=1)
    assert len(lines) == 3
    for stage in peer_comparison.STAGES:
        assert (tmp_path / "multi" / stage / "comparison.md").is_file()
    predicted = json.loads((tmp_path / "multi" / "predicted" / "comparison.json").read_text())
    assert {r["api_time_source"] for r in predicted} == {"type_mean"}
    assert {r["policy"] for r in predicted} == {OURS, f"{OURS}-no_reconsider"}
    goals = (tmp_path / "goals.md").read_text()
    assert goals.count("| multi |") == 3

    (tmp_path / "goals.md").unlink()
    assert peer_comparison.run_peer_comparison(tmp_path, ["multi"], stages=()) == lines  # from the results alone
    assert (tmp_path / "goals.md").read_text() == goals


def test_a_stage_left_out_needs_earlier_results(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run that stage first"):
        peer_comparison.run_peer_comparison(tmp_path, ["multi"], stages=("compare",))
    with pytest.raises(ValueError, match="unknown stage"):
        peer_comparison.run_peer_comparison(tmp_path, ["multi"], stages=("warmup",))

"""Comparison tables: seeds averaged with their spread, reductions paired by seed, saturation rates."""

from __future__ import annotations

import pytest

from lamps_jax.bench.report import aggregate_seeds, improvement_table, markdown_table, saturation_rates


def row(policy: str, rate: float, seed: int, e2e: float, ttft: float, **extra) -> dict:
    return {
        "trace": "multi",
        "rate": rate,
        "policy": policy,
        "seed": seed,
        "e2e_mean": e2e,
        "e2e_p99": 2 * e2e,
        "ttft_mean": ttft,
        "ttft_p99": 2 * ttft,
        "finished": 10,
    } | extra


def test_aggregate_seeds_gives_mean_and_sample_sd() -> None:
    rows = [row("lamps", 3.0, 0, 10.0, 1.0), row("lamps", 3.0, 1, 14.0, 3.0), row("vllm", 3.0, 0, 20.0, 2.0)]
    lamps, vllm = aggregate_seeds(rows)
    assert (lamps["policy"], lamps["seeds"], lamps["e2e_mean"]) == ("lamps", 2, 12.0)
    assert lamps["e2e_mean_sd"] == pytest.approx(2**0.5 * 2)
    assert "seed" not in lamps
    assert (vllm["seeds"], vllm["e2e_mean_sd"]) == (1, 0.0)


def test_saturation_is_the_last_rate_before_the_queue_grows_for_the_strongest_baseline() -> None:
    rows = [
        row("vllm", 2.0, 0, 10, 0.2),
        row("vllm", 3.0, 0, 10, 5.0),  # vllm saturates past 2
        row("vllm", 4.0, 0, 10, 0.5),  # a later dip does not count
        row("infercept", 2.0, 0, 10, 0.1),
        row("infercept", 3.0, 0, 10, 0.9),
        row("infercept", 4.0, 0, 10, 30.0),  # infercept sustains 3
        row("lamps", 4.0, 0, 10, 0.1),  # not a baseline
    ]
    assert saturation_rates(rows, ("vllm", "infercept")) == {("multi",): ("infercept", 3.0)}
    assert saturation_rates(rows, ("vllm",)) == {("multi",): ("vllm", 2.0)}
    # a baseline that never saturates within the sweep gives no saturation rate
    assert saturation_rates([r for r in rows if r["rate"] < 4], ("infercept",)) == {}


def test_improvement_table_pairs_runs_by_seed_and_states_the_rate_fraction() -> None:
    rows = [
        row("infercept", 2.0, 0, 10.0, 0.5),
        row("infercept", 2.0, 1, 20.0, 0.5),
        row("lamps", 2.0, 0, 5.0, 0.25),  # 50% lower than seed 0's infercept
        row("lamps", 2.0, 1, 15.0, 0.25),  # 25% lower than seed 1's infercept
        row("infercept", 4.0, 0, 40.0, 8.0),
        row("infercept", 4.0, 1, 40.0, 8.0),
        row("lamps", 4.0, 0, 10.0, 2.0),
        row("lamps", 4.0, 1, 10.0, 2.0),
    ]
    table = improvement_table(rows, baselines=("infercept",))
    lines = table.splitlines()
    assert lines[0].startswith("| trace | rate/s | of saturation | vs | E2E mean |")
    reductions = "37.5% ± 17.7% | 37.5% ± 17.7% | 50.0% ± 0.0% | 50.0% ± 0.0%"
    assert lines[2] == f"| multi | 2.0 | 1.00 | infercept | {reductions} |"
    assert lines[3].startswith("| multi | 4.0 | 2.00 | infercept | 75.0% ± 0.0% |")
    assert "infercept sustains 2 req/s" in table


def test_markdown_table_shows_only_the_point_keys_that_vary() -> None:
    rows = [row("lamps", 3.0, 0, 10.0, 1.0, length_noise=0.0), row("lamps", 3.0, 0, 11.0, 1.0, length_noise=0.4)]
    header = markdown_table(rows).splitlines()[0]
    assert header.startswith("| trace | rate/s | noise | policy | E2E mean s |")
    same = [row("lamps", 3.0, 0, 10.0, 1.0, length_noise=0.0)]
    assert "noise" not in markdown_table(same).splitlines()[0]


def test_a_zero_baseline_gives_nan_not_an_error() -> None:
    rows = [row("infercept", 2.0, 0, 10.0, 0.0), row("lamps", 2.0, 0, 5.0, 0.0)]
    line = improvement_table(rows, baselines=("infercept",)).splitlines()[2]
    assert line == "| multi | 2.0 | n/a | infercept | 50.0% | 50.0% | nan% | nan% |"


def test_a_strategy_count_missing_in_one_seed_counts_as_zero() -> None:
    rows = [row("lamps", 3.0, 0, 10.0, 1.0, strategy_swap=4), row("lamps", 3.0, 1, 10.0, 1.0)]
    (merged,) = aggregate_seeds(rows)
    assert merged["strategy_swap"] == 2.0

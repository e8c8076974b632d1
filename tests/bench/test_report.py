"""Comparison tables: seeds averaged with a 95% CI (Student t), reductions paired by seed, the columns and
setting line of the point fields, saturation rates."""

from __future__ import annotations

import dataclasses

import pytest

from lamps_jax.bench import report
from lamps_jax.bench.report import (
    BASELINES,
    aggregate_seeds,
    comparison_markdown,
    improvement_table,
    markdown_table,
    mean_ci95,
    paired_reductions,
    saturation_rates,
    setting_text,
)
from lamps_jax.bench.sim_grid import SimPoint

# SimPoint's fields (but policy and seed) with the ones being added: max_num_seqs, admission, final_call
NEW_POINT_FIELDS = (
    *("trace", "rate", "profile", "window", "length_noise", "starvation_threshold", "kv_capacity_tokens"),
    *("max_num_seqs", "admission", "final_call"),
)
T_975_2 = 4.302652729911275  # Student t quantile 0.975 with 2 degrees of freedom, from tables


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


def test_the_ci_half_width_is_student_t_times_the_standard_error() -> None:
    mean, half = mean_ci95([1.0, 2.0, 3.0])  # sd 1
    assert mean == 2.0 and half == pytest.approx(T_975_2 / 3**0.5) and half == pytest.approx(2.4841, abs=1e-4)
    assert mean_ci95([5.0]) == (5.0, None)


def test_aggregate_seeds_gives_mean_and_ci_half_width_and_no_interval_for_one_seed() -> None:
    rows = [row("lamps", 3.0, s, e2e, 1.0, preemptions=p) for s, e2e, p in ((0, 1.0, 4), (1, 2.0, 6), (2, 3.0, 8))]
    rows.append(row("vllm", 3.0, 0, 20.0, 2.0, preemptions=9))
    lamps, vllm = aggregate_seeds(rows)
    assert (lamps["policy"], lamps["seeds"], lamps["e2e_mean"]) == ("lamps", 3, 2.0)
    assert lamps["e2e_mean_ci95"] == pytest.approx(2.4841, abs=1e-4) and lamps["e2e_mean_sd"] == pytest.approx(1.0)
    assert lamps["preemptions_ci95"] == pytest.approx(2 * T_975_2 / 3**0.5)
    assert "seed" not in lamps
    assert vllm["seeds"] == 1 and "e2e_mean_ci95" not in vllm and "e2e_mean_sd" not in vllm
    table = markdown_table(rows).splitlines()
    assert table[0].endswith("| KV waste | preempted | finished |")
    assert table[2].startswith("| multi | 3.0 | lamps | 2 ± 2.5 | 4 ± 5 |") and "| 6 ± 5 | 10 ± 0 |" in table[2]
    assert table[3].startswith("| multi | 3.0 | vllm | 20 | 40 | 2 | 4 |") and "±" not in table[3]


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
    # nor does vllm's saturation count as the strongest baseline's when infercept sustains the whole sweep
    assert saturation_rates([r for r in rows if r["rate"] < 4], ("vllm", "infercept")) == {}


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
    # per seed 50% and 25%: mean 37.5%, sd 17.68%, half-width t(0.975, 1) = 12.706 times sd / sqrt(2): 158.8%
    reductions = "37.5% ± 158.8% | 37.5% ± 158.8% | 50.0% ± 0.0% | 50.0% ± 0.0%"
    assert lines[2] == f"| multi | 2.0 | 1.00 | infercept | {reductions} |"
    assert lines[3].startswith("| multi | 4.0 | 2.00 | infercept | 75.0% ± 0.0% |")
    assert "infercept sustains 2 req/s" in table


def test_reductions_are_paired_per_seed_not_taken_between_means() -> None:
    rows = [
        row("vllm", 2.0, 0, 10.0, 1.0),
        row("vllm", 2.0, 1, 30.0, 1.0),
        row("vllm", 2.0, 2, 20.0, 1.0),
        row("lamps", 2.0, 0, 9.0, 0.5),  # 10% lower
        row("lamps", 2.0, 1, 24.0, 0.5),  # 20% lower
        row("lamps", 2.0, 2, 14.0, 0.5),  # 30% lower
        row("lamps", 2.0, 3, 1.0, 0.5),  # no vllm run with seed 3: not paired
        row("sjf", 2.0, 0, 9.0, 1.0),
        row("sjf", 2.0, 1, 9.0, 1.0),
    ]
    (vs_vllm, vs_sjf) = paired_reductions(rows, baselines=BASELINES)
    assert (vs_vllm["vs"], vs_vllm["pairs"]) == ("vllm", 3)
    assert vs_vllm["e2e_mean"] == pytest.approx(0.2)  # the mean of the per-seed reductions
    assert vs_vllm["e2e_mean_ci95"] == pytest.approx(0.1 * T_975_2 / 3**0.5)
    assert vs_vllm["ttft_mean"] == pytest.approx(0.5) and vs_vllm["ttft_mean_ci95"] == pytest.approx(0.0)
    assert (vs_sjf["vs"], vs_sjf["pairs"], vs_sjf["e2e_mean"]) == ("sjf", 2, pytest.approx(-0.8333333))
    assert "20.0% ± 24.8% |" in improvement_table(rows)


def test_the_baselines_include_infercepts_swap_variant_and_sjf() -> None:
    assert {"vllm", "infercept", "infercept_swap", "lamps_no_rank", "sjf"} <= set(BASELINES)
    rows = [row(p, 2.0, 0, e2e, 0.5) for p, e2e in (("infercept_swap", 10.0), ("lamps", 8.0))]
    assert "| infercept_swap | 20.0% |" in improvement_table(rows)


def test_markdown_table_shows_only_the_point_keys_that_vary() -> None:
    rows = [row("lamps", 3.0, 0, 10.0, 1.0, length_noise=0.0), row("lamps", 3.0, 0, 11.0, 1.0, length_noise=0.4)]
    header = markdown_table(rows).splitlines()[0]
    assert header.startswith("| trace | rate/s | noise | policy | E2E mean s |")
    same = [row("lamps", 3.0, 0, 10.0, 1.0, length_noise=0.0)]
    assert "noise" not in markdown_table(same).splitlines()[0]


def test_a_constant_point_field_goes_to_the_setting_line_a_varying_one_becomes_a_column() -> None:
    setting = {"profile": "gptj-6b-a100", "window": 1800.0, "kv_capacity_tokens": None}
    rows = [
        row(p, 2.0, seed, 10.0, 0.5, starvation_threshold=t, **setting)
        for p in ("vllm", "lamps")
        for seed in (0, 1)
        for t in (10, 100)
    ]
    text = setting_text(rows)
    assert text == "Setting: profile=gptj-6b-a100, window=1800.0 s, kv_capacity_tokens=the profile's; seeds 0, 1."
    table = comparison_markdown(rows)
    assert table.count(text) == 2  # with each table
    assert "| trace | rate/s | starve | policy |" in table and "| trace | rate/s | starve | of saturation |" in table
    assert "| multi | 2.0 | 100 | lamps |" in table and "starvation_threshold=" not in table
    assert "mean ± 95% CI (Student t, 2 seeds)" in table


def test_every_point_field_of_simpoint_is_a_column_or_in_the_setting(monkeypatch) -> None:
    monkeypatch.setattr(report, "point_fields", lambda: NEW_POINT_FIELDS)
    rows = [
        row("lamps", 2.0, 0, 8.0, 0.5, max_num_seqs=seqs, admission="auto", final_call="made") for seqs in (32, 256)
    ]
    assert setting_text(rows) == "Setting: admission=auto, final_call=made; seed 0."
    assert (
        markdown_table(rows).splitlines()[2]
        == "| multi | 2.0 | 32 | lamps | 8 | 16 | 0.5 | 1 | n/r | n/r | n/r | n/r | 10 |"
    )
    # a row that lacks a field others hold (an older run's) differs from them: the field is a column, n/r there
    mixed = [rows[1], row("vllm", 2.0, 0, 10.0, 0.5, admission="auto", final_call="made")]
    assert markdown_table(mixed).startswith("| trace | rate/s | seqs | policy |")
    assert "| multi | 2.0 | n/r | vllm |" in markdown_table(mixed)


def test_a_field_that_no_row_holds_is_neither_a_column_nor_in_the_setting(monkeypatch) -> None:
    monkeypatch.setattr(report, "point_fields", lambda: NEW_POINT_FIELDS)
    rows = [row("lamps", 2.0, 0, 8.0, 0.5), row("vllm", 2.0, 0, 10.0, 0.5)]
    assert setting_text(rows) == "Setting: seed 0."
    assert markdown_table(rows).startswith("| trace | rate/s | policy |")


def test_the_point_fields_are_simpoints_but_policy_and_seed_trace_and_rate_first() -> None:
    names = [f.name for f in dataclasses.fields(SimPoint) if f.name not in ("policy", "seed")]
    assert report.point_fields()[:2] == ("trace", "rate") and sorted(report.point_fields()) == sorted(names)
    assert report.point_fields() == report.POINT_KEYS


def test_a_zero_baseline_gives_nan_not_an_error() -> None:
    rows = [row("infercept", 2.0, 0, 10.0, 0.0), row("lamps", 2.0, 0, 5.0, 0.0)]
    line = improvement_table(rows, baselines=("infercept",)).splitlines()[2]
    assert line == "| multi | 2.0 | n/a | infercept | 50.0% | 50.0% | nan% | nan% |"


def test_a_strategy_count_missing_in_one_seed_counts_as_zero() -> None:
    rows = [row("lamps", 3.0, 0, 10.0, 1.0, strategy_swap=4), row("lamps", 3.0, 1, 10.0, 1.0)]
    (merged,) = aggregate_seeds(rows)
    assert merged["strategy_swap"] == 2.0

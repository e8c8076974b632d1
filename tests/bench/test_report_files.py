"""Captioned tables, the files each writer names, and `lamps-jax report` on JSON that is not a comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lamps_jax.bench import report
from lamps_jax.bench.comparison import rerender
from lamps_jax.bench.report import comparison_markdown, write_rows
from lamps_jax.bench.scheduler_overhead import run_scheduler_benchmark
from lamps_jax.bench.wording import plural
from lamps_jax.cli import main
from tests.bench.test_report import NEW_POINT_FIELDS, row


def test_every_table_follows_its_caption_and_setting_lines() -> None:
    rows = [
        row(p, 2.0, seed, e2e, 0.5, window=600.0) for p, e2e in (("vllm", 10.0), ("lamps", 8.0)) for seed in (0, 1, 2)
    ]
    lines = comparison_markdown(rows).splitlines()
    assert lines[0].startswith("Table 1. Every metric per point and policy; cells: mean ± 95% CI (Student t, 3 seeds).")
    assert lines[1] == "Setting: window=600.0 s; seeds 0, 1, 2."
    assert lines[2] == "" and lines[3].startswith("| trace | rate/s | policy |")
    caption = next(i for i, line in enumerate(lines) if line.startswith("Table 2. "))
    assert "(baseline - lamps) / baseline, computed per seed on paired runs" in lines[caption]
    assert "cells: mean ± 95% CI (Student t, 3 seeds)" in lines[caption]
    assert "negative = lamps is slower" in lines[caption] and lines[caption + 1] == lines[1]
    assert lines[caption + 2] == "" and lines[caption + 3].startswith("| trace | rate/s | of saturation | vs |")


def test_a_run_without_lamps_and_a_baseline_says_why_it_has_no_reduction_table() -> None:
    text = comparison_markdown([row("vllm", 2.0, 0, 10.0, 0.5)])
    assert "Table 1. Every metric per point and policy; cells: one seed per point, so no interval." in text
    assert "Table 2." not in text and "of saturation" not in text
    assert text.rstrip().splitlines()[-1] == (
        "No Table 2 (reduction of lamps's latency vs the baselines): it needs lamps and at least one of "
        "infercept, infercept_swap, vllm, sjf, lamps_no_rank in the run; this run has vllm."
    )


def test_write_rows_returns_every_file_it_wrote(tmp_path: Path) -> None:
    paths = write_rows([row("lamps", 2.0, 0, 8.0, 0.5)], tmp_path, "comparison")
    assert paths == [tmp_path / f"comparison.{ext}" for ext in ("json", "csv", "md")]
    assert all(p.is_file() for p in paths)
    assert (tmp_path / "comparison.md").read_text().startswith("Table 1. ")


def test_rerender_renders_an_old_comparison_json_without_the_newer_point_fields(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(report, "point_fields", lambda: (*NEW_POINT_FIELDS,))
    old = {"profile": "gptj-6b-a100", "window": 1800.0, "length_noise": 0.0, "starvation_threshold": 100}
    old |= {"kv_capacity_tokens": 3000, "throughput_rps": 1.0, "memory_waste": 0.1, "preemptions": 2}
    old |= {"normalized_mean": 0.05}
    rows = [row(p, 2.0, seed, e2e, 0.5, **old) for p, e2e in (("infercept", 10.0), ("lamps", 8.0)) for seed in (0, 1)]
    path = tmp_path / "comparison.json"
    path.write_text(json.dumps(rows))
    assert rerender(path) == rows
    out = capsys.readouterr().out
    setting = (
        "Setting: profile=gptj-6b-a100, window=1800.0 s, length_noise=0.0, starvation_threshold=100, "
        "kv_capacity_tokens=3000; seeds 0, 1."
    )
    assert out.count(setting + "\n") == 2
    assert "| trace | rate/s | policy | E2E mean s |" in out and "| infercept | 20.0% ± 0.0% |" in out
    assert "| n/r" not in out and "max_num_seqs" not in out and "seqs |" not in out and "None" not in out
    assert (tmp_path / "comparison.md").read_text() == out.split("wrote ")[0].rstrip("\n") + "\n"


def test_report_rejects_the_scheduler_benchmark_json_naming_what_it_found(tmp_path: Path, capsys) -> None:
    run_scheduler_benchmark([5], 2, tmp_path)
    written = tmp_path / "scheduler_overhead.json"
    assert f"wrote {written}" in capsys.readouterr().out
    assert main(["report", str(written)]) == 2
    err = capsys.readouterr().err
    assert f"{written} is not the comparison.json of a lamps-jax bench run" in err
    assert "found a list of 3 items whose first has keys policy, waiting, mean_us, p99_us" in err
    assert "(missing trace, rate, e2e_mean," in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("[1, 2]", "found a list of int values"),
        ("[]", "found an empty list"),
        ('"rows"', "found a JSON str"),
        ('{"policy": "lamps"}', "found a JSON object with keys policy"),
    ],
)
def test_rerender_names_what_a_json_file_holds_instead_of_rows(tmp_path: Path, text: str, found: str) -> None:
    path = tmp_path / "other.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"is not the comparison\.json") as raised:
        rerender(path)
    assert found in str(raised.value)


def test_rerender_rejects_a_malformed_file(tmp_path: Path) -> None:
    path = tmp_path / "comparison.json"
    path.write_text('[{"trace": "multi",')
    with pytest.raises(ValueError, match=r"is not valid JSON .*expected the comparison\.json of a bench run"):
        rerender(path)


def test_plural_counts_one_thing_in_the_singular() -> None:
    assert (plural(1, "request"), plural(2, "request"), plural(0, "run")) == ("1 request", "2 requests", "0 runs")
    assert plural(1, "policy", "policies") == "1 policy" and plural(3, "policy", "policies") == "3 policies"

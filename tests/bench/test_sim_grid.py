"""Simulated run grids: the same rows in one process or several, and `lamps-jax bench` sweeps end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lamps_jax.bench.sim_grid import SimPoint, run_grid
from lamps_jax.cli import main
from lamps_jax.sim.capacity import kv_capacity_tokens, load_model_config


def write_small_trace(tmp_path: Path) -> Path:
    """Twelve numeric records: chats with a long call, quick math calls, and plain generations."""
    records = {}
    for i in range(12):
        if i % 3 == 0:
            records[f"c{i}"] = [
                {"prompt_tokens": 900 + 40 * i, "completion_tokens": 60, "api_time": 3.0, "api_token_length": 40},
                {"prompt_tokens": 0, "completion_tokens": 30},
            ]
        elif i % 3 == 1:
            records[f"m{i}"] = [
                {"prompt_tokens": 200 + 10 * i, "completion_tokens": 20, "api_time": 1e-4, "api_token_length": 8},
                {"prompt_tokens": 0, "completion_tokens": 10},
            ]
        else:
            records[f"p{i}"] = [{"prompt_tokens": 400 + 20 * i, "completion_tokens": 120}]
    path = tmp_path / "small.json"
    path.write_text(json.dumps(records))
    return path


def without_wall_time(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "wall_seconds"}


def test_grid_rows_are_the_same_in_one_process_or_two(tmp_path: Path) -> None:
    trace = str(write_small_trace(tmp_path))
    points = [
        SimPoint(trace, rate, policy, window=20.0, kv_capacity_tokens=4000, seed=seed)
        for rate in (2.0, 6.0)
        for seed in (0, 1)
        for policy in ("vllm", "lamps")
    ]
    serial = run_grid(points, jobs=1, progress=False)
    parallel = run_grid(points, jobs=2, progress=False)
    assert [without_wall_time(r.row) for r in serial] == [without_wall_time(r.row) for r in parallel]
    for result, point in zip(parallel, points):
        assert result.point == point
        assert result.row["trace"] == "small" and result.row["policy"] == point.policy
        assert result.row["finished"] == result.row["requests"] > 0  # every arrival is served
        assert len(result.curves.latencies) == result.row["finished"]
        assert result.curves.memory.used_pages[-1] == 0
    # the seed changes the arrivals; the policy does not
    assert serial[0].row["requests"] == serial[1].row["requests"] != serial[2].row["requests"]


def test_grid_rejects_an_unknown_trace_or_profile_before_running(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent"):
        run_grid([SimPoint(str(tmp_path / "absent.json"), 1.0, "lamps")], jobs=2, progress=False)
    trace = str(write_small_trace(tmp_path))
    with pytest.raises(ValueError, match="no-such-profile"):
        run_grid([SimPoint(trace, 1.0, "lamps", profile="no-such-profile")], jobs=2, progress=False)


def test_bench_sweeps_every_combination_with_seed_error_bars(tmp_path: Path, capsys) -> None:
    trace = write_small_trace(tmp_path)
    out = tmp_path / "out"
    argv = ["bench", "--trace", str(trace), "--rates", "4", "--window", "15", "--policies", "infercept,lamps"]
    argv += ["--length-noise", "0,0.5", "--seeds", "0,1", "--kv-tokens", "3000", "--jobs", "1", "--output", str(out)]
    assert main(argv) == 0
    rows = json.loads((out / "comparison.json").read_text())
    assert len(rows) == 2 * 2 * 2  # noise x seeds x policies
    assert {(r["length_noise"], r["seed"], r["kv_capacity_tokens"]) for r in rows} == {
        (0.0, 0, 3000),
        (0.0, 1, 3000),
        (0.5, 0, 3000),
        (0.5, 1, 3000),
    }
    table = capsys.readouterr().out
    assert "| noise |" in table and "±" in table  # the swept key is a column; seeds give mean ± sd
    assert (out / "comparison_sweep.png").stat().st_size > 0
    assert (out / "details_small_4.0_length_noise0.0.png").is_file()


def test_bench_rejects_a_malformed_list(tmp_path: Path, capsys) -> None:
    assert main(["bench", "--rates", "3,four", "--output", str(tmp_path)]) == 2
    assert "comma-separated numbers" in capsys.readouterr().err


def test_bench_names_a_missing_trace(tmp_path: Path, capsys) -> None:
    assert main(["bench", "--trace", str(tmp_path / "absent.json"), "--output", str(tmp_path)]) == 2
    assert "absent.json not found" in capsys.readouterr().err


def test_report_rerenders_a_runs_rows_and_rejects_other_json(tmp_path: Path, capsys) -> None:
    trace = write_small_trace(tmp_path)
    out = tmp_path / "out"
    argv = ["bench", "--trace", str(trace), "--rates", "2,4", "--window", "10", "--policies", "infercept,lamps"]
    assert main(argv + ["--jobs", "1", "--seeds", "0", "--output", str(out)]) == 0
    first = capsys.readouterr().out
    (out / "comparison.md").unlink()
    assert main(["report", str(out / "comparison.json")]) == 0
    again = capsys.readouterr().out
    assert again.startswith("Table 1. ") and f"wrote {out / 'comparison.md'}\n" in again
    assert again == "".join(line for line in first.splitlines(keepends=True) if "details_" not in line)
    assert (out / "comparison.md").is_file()
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "rows"}')
    assert main(["report", str(bad)]) == 2
    assert "is not the comparison.json of a lamps-jax bench run" in capsys.readouterr().err


def test_bench_derives_the_kv_memory_from_a_model_and_a_device(tmp_path: Path, capsys) -> None:
    trace = str(write_small_trace(tmp_path))
    out = tmp_path / "out"
    argv = ["bench", "--trace", trace, "--rates", "2", "--window", "5", "--policies", "lamps", "--jobs", "1"]
    argv += ["--seeds", "0"]
    assert main(argv + ["--kv-model", "tiny", "--device-memory-gb", "0.02", "--output", str(out)]) == 0
    (row,) = json.loads((out / "comparison.json").read_text())
    assert row["kv_capacity_tokens"] == kv_capacity_tokens(load_model_config("tiny"), 0.02e9)
    assert main(argv + ["--kv-model", "tiny", "--kv-tokens", "4000", "--output", str(out)]) == 2
    assert "not both" in capsys.readouterr().err


def test_prefix_caching_in_the_simulator_reuses_only_a_requests_own_discarded_context(tmp_path: Path) -> None:
    """Arrivals get distinct prompts, so nothing is shared between requests; a vLLM request that discarded its
    KV at a call finds its pages still cached on return and recomputes less."""
    calls = str(write_small_trace(tmp_path))
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({f"p{i}": [{"prompt_tokens": 300, "completion_tokens": 20}] for i in range(8)}))
    rows = {}
    for trace in (calls, str(plain)):
        for caching in (False, True):
            point = SimPoint(trace, 2.0, "vllm", window=10.0, kv_capacity_tokens=20000, enable_prefix_caching=caching)
            rows[Path(trace).stem, caching] = run_grid([point], jobs=1, progress=False)[0].row
    assert rows["plain", True].get("prefix_pages_hit", 0) == 0  # same-length filler prompts, yet no sharing
    assert rows["small", True]["prefix_pages_hit"] > 0 == rows["small", False].get("prefix_pages_hit", 0)
    assert rows["small", True]["finished"] == rows["small", False]["finished"] == rows["small", True]["requests"]

"""``lamps-jax bench``: policies side by side on a trace at several request rates.

Simulated mode (default) replays Poisson arrivals from a trace for a time window on the simulated
engine with a cost profile (the paper's GPT-J-6B / A100 setting by default): every policy sees the
same arrivals. Real mode runs a short, scaled-down slice of the trace on a real model (SmolLM2 or
tiny) with the wall clock: prompts and outputs capped, API times scaled, so it finishes in minutes
on a CPU. Both write a Markdown/CSV/JSON table, the reduction of LAMPS vs the baselines, and plots.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Sequence
from pathlib import Path

from lamps_jax.bench.harness import RunResult, run_workload
from lamps_jax.bench.report import (
    POINT_TITLES,
    improvement_table,
    markdown_table,
    plot_run_details,
    plot_sweep,
    point_keys,
    write_rows,
)
from lamps_jax.bench.sim_grid import PointResult, SimPoint, run_grid
from lamps_jax.config import CacheConfig, EngineConfig, SchedulerConfig
from lamps_jax.engine import LLMEngine
from lamps_jax.model.registry import load_model
from lamps_jax.request import Segment
from lamps_jax.workload.arrivals import poisson_arrivals
from lamps_jax.workload.spec import WorkloadRequest
from lamps_jax.workload.traces import DEFAULT_TRACES, load_trace


def _row(trace: str, rate: float, result: RunResult) -> dict:
    return {"trace": trace, "rate": rate, "policy": result.policy} | result.metrics()


def simulate_comparison(
    traces: list[str],
    rates: list[float],
    policies: list[str],
    window: float,
    profile: str,
    length_noises: Sequence[float] = (0.0,),
    starvation_thresholds: Sequence[int] = (100,),
    kv_capacities: Sequence[int | None] = (None,),
    seeds: Sequence[int] = (0,),
    jobs: int | None = None,
    output_dir: Path | None = None,
) -> list[dict]:
    """Every combination of the lists, each policy on the same arrivals per (trace, rate, seed)."""
    points = [
        SimPoint(trace, rate, policy, profile, window, noise, threshold, kv, seed)
        for trace, rate, noise, threshold, kv, seed, policy in itertools.product(
            traces, rates, length_noises, starvation_thresholds, kv_capacities, seeds, policies
        )
    ]
    results = run_grid(points, jobs)
    rows = [r.row for r in results]
    if output_dir is not None:
        _plot_details(results, output_dir, seeds[0])
    _report(rows, output_dir, "comparison")
    return rows


def _plot_details(results: list[PointResult], output_dir: Path, seed: int) -> None:
    """One figure per point (all policies, the first seed), named after the point's varying keys."""
    rows = [r.row for r in results]
    keys = point_keys(rows)
    output_dir.mkdir(parents=True, exist_ok=True)
    for point, group in itertools.groupby(
        sorted((r for r in results if r.point.seed == seed), key=lambda r: [str(r.row[k]) for k in keys]),
        key=lambda r: tuple(r.row[k] for k in keys),
    ):
        group = list(group)
        name = "_".join(str(v) if k in ("trace", "rate") else f"{k}{v}" for k, v in zip(keys, point))
        title = ", ".join(f"{POINT_TITLES.get(k, k)} {v}" for k, v in zip(keys, point))
        plot_run_details(
            [r.curves for r in group], output_dir / f"details_{name}.png", f"{title} ({group[0].point.profile})"
        )


def _scaled(request: WorkloadRequest, max_prompt: int, max_segment: int, time_scale: float) -> WorkloadRequest:
    segments = tuple(
        Segment(
            min(s.num_tokens, max_segment),
            None
            if s.api_call is None
            else dataclasses.replace(
                s.api_call,
                duration=s.api_call.duration * time_scale,
                result_token_ids=s.api_call.result_token_ids[:max_segment],
            ),
        )
        for s in request.segments
    )
    return dataclasses.replace(request, prompt_tokens=min(request.prompt_tokens, max_prompt), segments=segments)


def real_comparison(
    model: str,
    trace: str,
    num_requests: int,
    rate: float,
    policies: list[str],
    time_scale: float = 0.02,
    max_prompt: int = 96,
    max_segment: int = 24,
    seed: int = 0,
    output_dir: Path | None = None,
) -> list[dict]:
    loaded = load_model(model)
    requests = [_scaled(r, max_prompt, max_segment, time_scale) for r in load_trace(DEFAULT_TRACES.get(trace, trace))]
    arrivals = poisson_arrivals(requests, rate, duration=num_requests / rate, seed=seed)[:num_requests]
    rows, results = [], []
    for policy in policies:
        config = EngineConfig(
            cache=CacheConfig(page_size=16, kv_memory_bytes=24 * 2**20),
            scheduler=SchedulerConfig(policy=policy, max_num_seqs=16, max_num_batched_tokens=128, num_host_pages=256),
            max_model_len=1024,
        )
        engine = LLMEngine(loaded, config)
        results.append(run_workload(engine, arrivals))
        rows.append(_row(trace, rate, results[-1]))
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        plot_run_details(
            [r.curves() for r in results],
            output_dir / "real_details.png",
            f"{model}, {trace} trace (scaled), {rate} req/s",
        )
    _report(rows, output_dir, "real_comparison")
    return rows


def rerender(path: Path) -> list[dict]:
    """Re-renders the tables and the sweep plot of a ``comparison.json`` written by an earlier run."""
    try:
        rows = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not (isinstance(rows, list) and rows and all(isinstance(r, dict) and "policy" in r for r in rows)):
        raise ValueError(f"{path} does not hold the rows of a lamps-jax bench run")
    _report(rows, path.parent, path.stem)
    return rows


def _report(rows: list[dict], output_dir: Path | None, stem: str) -> None:
    print(markdown_table(rows))  # plain Markdown: readable at any terminal width, and pasteable
    print(improvement_table(rows))
    if output_dir is not None:
        write_rows(rows, output_dir, stem)
        if len({tuple(r[k] for k in point_keys(rows)) for r in rows}) > 1:
            plot_sweep(rows, output_dir / f"{stem}_sweep.png")

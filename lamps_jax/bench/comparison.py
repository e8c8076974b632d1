"""``lamps-jax bench``: policies side by side on a trace at several request rates.

Simulated mode (default) replays Poisson arrivals from a trace for a time window on the simulated
engine with a cost profile (the paper's GPT-J-6B / A100 setting by default): every policy sees the
same arrivals. Real mode runs a short, scaled-down slice of the trace on a real model (SmolLM2 or
tiny) with the wall clock: prompts and outputs capped, API times scaled, so it finishes in minutes
on a CPU. Both print and write the captioned tables (Markdown, CSV, JSON; see ``report``: each table with a
setting line naming every constant point field and the seeds) and plots, and name every file they write.
Ctrl-C during a simulated grid writes the rows of the runs finished so far, then
re-raises (``GridInterrupted``, a ``KeyboardInterrupt``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from lamps_jax.bench.harness import RunResult, run_workload
from lamps_jax.bench.plots import run_details_figure, save, sweep_figure
from lamps_jax.bench.report import POINT_TITLES, check_rows, comparison_markdown, point_keys, write_rows
from lamps_jax.bench.sim_grid import PAGE_SIZE, GridInterrupted, PointResult, SimPoint, check_kv_capacity, run_grid
from lamps_jax.bench.wording import plural, print_written
from lamps_jax.config import CacheConfig, EngineConfig, SchedulerConfig
from lamps_jax.engine import LLMEngine
from lamps_jax.model.registry import load_model
from lamps_jax.request import Segment
from lamps_jax.workload.arrivals import poisson_arrivals
from lamps_jax.workload.spec import WorkloadRequest
from lamps_jax.workload.traces import DEFAULT_TRACES, load_trace

REAL_KV_MEMORY_BYTES = 24 * 2**20  # real mode's KV memory unless a capacity in tokens is given


def _row(trace: str, rate: float, result: RunResult) -> dict:
    return {"trace": trace, "rate": rate, "policy": result.policy} | result.metrics()


def simulate_comparison(
    policies: list[str],
    seeds: Sequence[int] = (0,),
    jobs: int | None = None,
    output_dir: Path | None = None,
    **sweeps: Sequence,
) -> list[dict]:
    """Every combination of the ``sweeps`` (``SimPoint`` field -> values, e.g. ``trace=["multi"], rate=[3, 4]``),
    each seed and each policy on the same arrivals per (trace, rate, seed).

    On Ctrl-C the finished runs' rows are printed and written (no plots), then ``GridInterrupted`` is re-raised.
    """
    points = [
        SimPoint(**dict(zip(sweeps, values, strict=True)), seed=seed, policy=policy)
        for values in itertools.product(*sweeps.values())
        for seed in seeds
        for policy in policies
    ]
    try:
        results = run_grid(points, jobs)
    except GridInterrupted as interrupted:
        _report_interrupted(interrupted, output_dir)
        raise
    rows = [r.row for r in results]
    _report(rows, output_dir, "comparison")
    if output_dir is not None:
        print_written(_plot_details(results, output_dir, seeds[0]))
    return rows


def _report_interrupted(interrupted: GridInterrupted, output_dir: Path | None) -> None:
    """Prints and writes the finished runs' tables, then says on stderr how far the grid got and where they went."""
    rows = [r.row for r in interrupted.finished]
    message = f"interrupted: {len(rows)} of {plural(interrupted.total, 'simulated run')} finished"
    if rows:
        _report(rows, output_dir, "comparison", plots=False)
    if rows and output_dir is not None:
        message += (
            f"; their rows are in {output_dir}/comparison.{{md,csv,json}} "
            "(no plots: `lamps-jax report` on the JSON draws the sweep plot)"
        )
    print(message, file=sys.stderr)


def _plot_details(results: list[PointResult], output_dir: Path, seed: int) -> list[Path]:
    """One figure per point (all policies, the first seed), named after the point's varying keys."""
    rows = [r.row for r in results]
    keys = point_keys(rows)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for point, group in itertools.groupby(
        sorted((r for r in results if r.point.seed == seed), key=lambda r: [str(r.row[k]) for k in keys]),
        key=lambda r: tuple(r.row[k] for k in keys),
    ):
        group = list(group)
        name = "_".join(str(v) if k in ("trace", "rate") else f"{k}{v}" for k, v in zip(keys, point))
        title = ", ".join(f"{POINT_TITLES.get(k, k)} {v}" for k, v in zip(keys, point))
        figure = run_details_figure([r.curves for r in group], f"{title} ({group[0].point.profile}, seed {seed})")
        paths.append(save(figure, output_dir / f"details_{name}.png"))
    return paths


def scaled_request(request: WorkloadRequest, max_prompt: int, max_segment: int, time_scale: float) -> WorkloadRequest:
    """A trace request cut down for a real model on this CPU: the prompt to ``max_prompt`` tokens, each segment's
    decode and each call's result to ``max_segment`` tokens, each call's duration times ``time_scale``."""
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


def exact_poisson_arrivals(
    requests: Sequence[WorkloadRequest], rate: float, count: int, seed: int
) -> list[WorkloadRequest]:
    """The first ``count`` arrivals of a Poisson process of ``rate`` requests/s drawing from ``requests``.

    A window of ``count / rate`` seconds holds Poisson(count) arrivals, often fewer than ``count``: the
    window is doubled until it holds enough.
    """
    duration = count / rate
    arrivals = poisson_arrivals(requests, rate, duration, seed)
    while len(arrivals) < count:
        duration *= 2
        arrivals = poisson_arrivals(requests, rate, duration, seed)
    return arrivals[:count]


def _check_real_inputs(num_requests: int, rate: float, kv_capacity_tokens: int | None) -> None:
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"a request rate must be a number > 0 (requests/s), got {rate}")
    if num_requests < 1:
        raise ValueError(f"the number of requests must be >= 1, got {num_requests}")
    check_kv_capacity(kv_capacity_tokens)


def _real_config(policy: str, kv_capacity_tokens: int | None, tensor_parallel: int = 1) -> EngineConfig:
    pages = None if kv_capacity_tokens is None else kv_capacity_tokens // PAGE_SIZE + 1
    return EngineConfig(
        cache=CacheConfig(page_size=PAGE_SIZE, kv_memory_bytes=REAL_KV_MEMORY_BYTES, num_pages=pages),
        scheduler=SchedulerConfig(policy=policy, max_num_seqs=16, max_num_batched_tokens=128, num_host_pages=256),
        max_model_len=1024,
        tensor_parallel=tensor_parallel,
    )


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
    kv_capacity_tokens: int | None = None,
    tensor_parallel: int = 1,
) -> list[dict]:
    """Serves exactly ``num_requests`` scaled trace requests under each policy on ``model``.

    KV memory: ``kv_capacity_tokens`` tokens when given, else 24 MiB (per device with ``tensor_parallel`` > 1).
    """
    _check_real_inputs(num_requests, rate, kv_capacity_tokens)
    loaded = load_model(model)
    requests = [
        scaled_request(r, max_prompt, max_segment, time_scale) for r in load_trace(DEFAULT_TRACES.get(trace, trace))
    ]
    arrivals = exact_poisson_arrivals(requests, rate, num_requests, seed)
    print(
        f"serving {plural(num_requests, 'request')} at {rate:g} requests/s under "
        f"{plural(len(policies), 'policy', 'policies')}"
    )
    rows, results, runner = [], [], None
    for policy in policies:
        # The policies share one runner: it is compiled once, and each run leaves every page free.
        engine = LLMEngine(loaded, _real_config(policy, kv_capacity_tokens, tensor_parallel), runner=runner)
        runner = engine.runner
        results.append(run_workload(engine, arrivals))
        rows.append(_row(trace, rate, results[-1]))
        metrics = rows[-1]
        print(
            f"{policy}: {plural(len(results[-1].outputs), 'request')} served in {results[-1].wall_seconds:.1f} s, "
            f"mean E2E {metrics['e2e_mean']:.2f} s, mean TTFT {metrics['ttft_mean']:.2f} s"
        )
    _report(rows, output_dir, "real_comparison")
    if output_dir is not None:
        figure = run_details_figure(
            [r.curves() for r in results], f"{model}, {trace} trace (scaled), {rate:g} requests/s"
        )
        print_written([save(figure, output_dir / "real_details.png")])
    return rows


def rerender(path: Path) -> list[dict]:
    """Re-renders the tables and the sweep plot of a ``comparison.json`` written by an earlier run."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}): expected the comparison.json of a bench run") from err
    rows = check_rows(data, str(path))
    _report(rows, path.parent, path.stem)
    return rows


def _report(rows: list[dict], output_dir: Path | None, stem: str, plots: bool = True) -> None:
    """Prints the captioned tables and, given a folder, writes them (and the sweep plot) and names the files."""
    print(comparison_markdown(rows))  # plain Markdown: readable at any terminal width, and pasteable
    if output_dir is None:
        return
    written = write_rows(rows, output_dir, stem)
    if plots and len({tuple(r.get(k) for k in point_keys(rows)) for r in rows}) > 1:
        written.append(save(sweep_figure(rows), output_dir / f"{stem}_sweep.png"))
    print_written(written)

"""``lamps-jax bench``: policies side by side on a trace at several request rates.

Simulated mode (default) replays Poisson arrivals from a trace for a time window on the simulated
engine with a cost profile (the paper's GPT-J-6B / A100 setting by default): every policy sees the
same arrivals. Real mode runs a short, scaled-down slice of the trace on a real model (SmolLM2 or
tiny) with the wall clock: prompts and outputs capped, API times scaled, so it finishes in minutes
on a CPU. Both write a Markdown/CSV/JSON table, the reduction of LAMPS vs the baselines, and plots.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rich.console import Console

from lamps_jax.bench.harness import RunResult, run_workload
from lamps_jax.bench.report import improvement_table, markdown_table, plot_latency_vs_rate, plot_run_details, write_rows
from lamps_jax.config import CacheConfig, EngineConfig, SchedulerConfig
from lamps_jax.engine import LLMEngine
from lamps_jax.model.registry import load_model
from lamps_jax.request import Segment
from lamps_jax.scheduler.cost_model import load_cost_model
from lamps_jax.sim.engine import simulated_engine
from lamps_jax.workload.arrivals import poisson_arrivals
from lamps_jax.workload.spec import WorkloadRequest
from lamps_jax.workload.traces import DEFAULT_TRACES, load_trace

POLICIES = ("vllm", "infercept", "sjf", "lamps", "lamps_no_rank")


def _row(trace: str, rate: float, result: RunResult) -> dict:
    return {"trace": trace, "rate": rate, "policy": result.policy} | result.metrics()


def simulate_comparison(
    traces: list[str],
    rates: list[float],
    policies: list[str],
    window: float,
    profile: str,
    length_noise: float = 0.0,
    starvation_threshold: int = 100,
    seed: int = 0,
    output_dir: Path | None = None,
) -> list[dict]:
    cost = load_cost_model(profile)
    rows = []
    console = Console()
    for trace in traces:
        requests = load_trace(DEFAULT_TRACES.get(trace, trace))
        for rate in rates:
            arrivals = poisson_arrivals(requests, rate, window, seed)
            results = []
            for policy in policies:
                config = SchedulerConfig(
                    policy=policy,
                    length_noise=length_noise,
                    predictor_seed=seed,
                    starvation_threshold=starvation_threshold,
                    cost_profile=profile,
                    kv_strategy="preserve",
                )
                engine = simulated_engine(cost, config)
                results.append(run_workload(engine, arrivals, window=window))
                rows.append(_row(trace, rate, results[-1]))
                console.print(
                    f"[dim]{trace} @ {rate}/s {policy}: {results[-1].iterations} iterations in "
                    f"{results[-1].wall_seconds:.1f} s[/dim]"
                )
            if output_dir is not None:
                output_dir.mkdir(parents=True, exist_ok=True)
                plot_run_details(
                    results,
                    output_dir / f"details_{Path(trace).stem}_{rate}.png",
                    f"{trace} trace, {rate} req/s, {profile}",
                )
    _report(rows, output_dir, "comparison")
    return rows


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
        plot_run_details(results, output_dir / "real_details.png", f"{model}, {trace} trace (scaled), {rate} req/s")
    _report(rows, output_dir, "real_comparison")
    return rows


def _report(rows: list[dict], output_dir: Path | None, stem: str) -> None:
    print(markdown_table(rows))  # plain Markdown: readable at any terminal width, and pasteable
    print(improvement_table(rows))
    if output_dir is not None:
        write_rows(rows, output_dir, stem)
        if len({r["rate"] for r in rows}) > 1:
            plot_latency_vs_rate(rows, output_dir / f"{stem}_latency_vs_rate.png")

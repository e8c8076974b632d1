"""A grid of simulated runs (trace x rate x policy x knobs x seed), spread over worker processes.

Each ``SimPoint`` is one independent run of the simulated engine: its Poisson arrivals depend only on
(trace, rate, window, seed), so every policy at a point sees the same requests whichever process
runs it. ``run_grid`` returns one ``PointResult`` per point, in the order given: the point's metrics
as a table row and the curves its plots need (E2E latencies, KV pages over time).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from lamps_jax.bench.harness import RunCurves, run_workload
from lamps_jax.config import SchedulerConfig
from lamps_jax.scheduler.cost_model import load_cost_model
from lamps_jax.sim.engine import simulated_engine
from lamps_jax.workload.arrivals import poisson_arrivals
from lamps_jax.workload.spec import WorkloadRequest
from lamps_jax.workload.traces import DEFAULT_TRACES, load_trace


@dataclass(frozen=True)
class SimPoint:
    trace: str  # "multi", "one" or a trace file
    rate: float  # requests per second
    policy: str
    profile: str = "gptj-6b-a100"  # cost profile name or JSON file
    window: float = 1800.0  # arrival window, seconds; every arrival is served to completion
    length_noise: float = 0.0
    starvation_threshold: int = 100
    kv_capacity_tokens: int | None = None  # None: the profile's own KV memory
    seed: int = 0

    def columns(self) -> dict:
        """The point as leading table columns (the trace by its short name)."""
        return dataclasses.asdict(self) | {"trace": Path(self.trace).stem}


@dataclass
class PointResult:
    point: SimPoint
    row: dict  # the point's columns followed by its metrics
    curves: RunCurves


@functools.cache
def _trace_requests(trace: str) -> tuple[WorkloadRequest, ...]:
    return tuple(load_trace(DEFAULT_TRACES.get(trace, trace)))


def run_point(point: SimPoint) -> PointResult:
    cost = load_cost_model(point.profile)
    config = SchedulerConfig(
        policy=point.policy,
        length_noise=point.length_noise,
        predictor_seed=point.seed,
        starvation_threshold=point.starvation_threshold,
        cost_profile=point.profile,
        kv_strategy="preserve",
    )
    engine = simulated_engine(cost, config, kv_capacity_tokens=point.kv_capacity_tokens)
    arrivals = poisson_arrivals(_trace_requests(point.trace), point.rate, point.window, point.seed)
    result = run_workload(engine, arrivals, window=point.window, progress=False)
    return PointResult(point, point.columns() | result.metrics(), result.curves())


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_grid(points: Sequence[SimPoint], jobs: int | None = None, progress: bool = True) -> list[PointResult]:
    """Runs every point (in ``jobs`` processes; 1 = in this process) and returns results in input order."""
    for point in points:  # fail before any work on a bad trace or profile name
        _trace_requests(point.trace)
        load_cost_model(point.profile)
    jobs = min(jobs or default_jobs(), len(points))
    done: dict[int, PointResult] = {}
    with tqdm(total=len(points), desc="simulated runs", unit="run", disable=not progress) as bar:
        if jobs <= 1:
            for i, point in enumerate(points):
                done[i] = run_point(point)
                bar.update()
        else:
            # spawn, not fork: the parent may hold JAX's threads, which a fork would copy in an unknown state
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
                longest_first = sorted(range(len(points)), key=lambda i: -points[i].rate * points[i].window)
                futures = {pool.submit(run_point, points[i]): i for i in longest_first}
                for future in concurrent.futures.as_completed(futures):
                    done[futures[future]] = future.result()
                    bar.update()
    return [done[i] for i in range(len(points))]

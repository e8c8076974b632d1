"""A grid of simulated runs (trace x rate x policy x knobs x seed), spread over worker processes.

Each ``SimPoint`` is one independent run of the simulated engine: its Poisson arrivals depend only on
(trace, rate, window, seed), so every policy at a point sees the same requests whichever process
runs it. ``run_grid`` returns one ``PointResult`` per point, in the order given: the point's metrics
as a table row and the curves its plots need (E2E latencies, KV pages over time). Ctrl-C stops the
grid at once (queued runs cancelled, workers terminated) and raises ``GridInterrupted`` with the
results of the runs that had finished.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import math
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from lamps_jax.bench.harness import RunCurves, run_workload
from lamps_jax.bench.metrics import DEFAULT_SLO_SCALE, slo_from_cost
from lamps_jax.bench.wording import plural
from lamps_jax.config import SchedulerConfig
from lamps_jax.scheduler.cost_model import load_cost_model
from lamps_jax.scheduler.policies import policy_class
from lamps_jax.sim.engine import simulated_engine
from lamps_jax.workload.agent_sessions import DEFAULT_TOKEN_SCALE, generate
from lamps_jax.workload.arrivals import poisson_arrivals
from lamps_jax.workload.spec import WorkloadRequest
from lamps_jax.workload.traces import DEFAULT_TRACES, load_trace

PAGE_SIZE = 16  # tokens per KV page of the simulated engine
AGENT_TRACE = "agent"
AGENT_POOL_SESSIONS = 400  # sessions generated once (seed AGENT_POOL_SEED); arrivals draw from them with replacement
AGENT_POOL_SEED = 0


def check_kv_capacity(tokens: int | None) -> None:
    """A KV capacity must hold at least one page; None stands for the cost profile's own."""
    if tokens is not None and tokens < PAGE_SIZE:
        raise ValueError(f"a KV capacity must be at least one page ({PAGE_SIZE} tokens), got {tokens} tokens")


AUTO = "auto"  # a point's admission or swap budget: what the policy's reference system used


@dataclass(frozen=True)
class SimPoint:
    """One simulated run. Every field is a setting a results table prints; docs/RESULTS.md ("Modelling
    choices") gives the reference code behind each default."""

    trace: str  # "multi", "one", "agent" (generated coding-agent sessions, one request each) or a trace file
    rate: float  # requests per second
    policy: str
    profile: str = "gptj-6b-a100"  # cost profile name or JSON file
    window: float = 1800.0  # arrival window, seconds; every arrival is served to completion
    length_noise: float = 0.0
    starvation_threshold: int = 100
    kv_capacity_tokens: int | None = None  # None: the profile's own KV memory
    seed: int = 0
    max_num_seqs: int = 256  # vLLM 0.2's default, which every reference run kept (arg_utils.py:28)
    admission: str = AUTO  # chunk | whole | auto (vllm: whole, the others: chunk)
    admission_watermark: float = 0.01  # whole admission: pages kept free (vLLM 0.2's block manager)
    swap_budget: str = AUTO  # fixed | infercept | overlap | unlimited | auto (the policy's own)
    decodes_first: bool = True
    api_time_source: str = "oracle"  # the reference runs give the scheduler each call's true duration
    starvation_scope: str = "started"
    score_step: str = "saturated"
    final_call: str = "made"  # a trace's last call: made (the reference driver) or dropped
    max_model_len: int = 2048  # GPT-J's context; requests are cut as the reference driver cuts them
    enable_prefix_caching: bool = False  # freed pages stay cached: a discarded context found on return is reused
    slo_scale: float = DEFAULT_SLO_SCALE  # goodput's SLO: this many times the unloaded latency at max_model_len
    agent_token_scale: float = DEFAULT_TOKEN_SCALE  # "agent": the factor on every token count of the sessions

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"a request rate must be a number > 0 (requests/s), got {self.rate}")
        if not (math.isfinite(self.window) and self.window > 0):
            raise ValueError(f"the arrival window must be a number of seconds > 0, got {self.window}")
        check_kv_capacity(self.kv_capacity_tokens)
        self.scheduler_config()  # a bad policy, admission, budget or source fails here

    def columns(self) -> dict:
        """The point as leading table columns (the trace by its short name)."""
        return dataclasses.asdict(self) | {"trace": Path(self.trace).stem}

    def scheduler_config(self) -> SchedulerConfig:
        """The scheduler of this run, with ``auto`` resolved to the policy's reference system."""
        policy = policy_class(self.policy)
        return SchedulerConfig(
            policy=self.policy,
            max_num_seqs=self.max_num_seqs,
            admission=policy.anchor_admission if self.admission == AUTO else self.admission,
            admission_watermark=self.admission_watermark,
            swap_budget=policy.anchor_swap_budget if self.swap_budget == AUTO else self.swap_budget,
            decodes_first=self.decodes_first,
            api_time_source=self.api_time_source,
            length_noise=self.length_noise,
            predictor_seed=self.seed,
            starvation_threshold=self.starvation_threshold,
            starvation_scope=self.starvation_scope,
            score_step=self.score_step,
            enable_prefix_caching=self.enable_prefix_caching,
            cost_profile=self.profile,
            kv_strategy="preserve",
        )


@dataclass
class PointResult:
    point: SimPoint
    row: dict  # the point's columns followed by its metrics
    curves: RunCurves


class GridInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``run_grid``: ``finished`` holds the results of the runs done by then, in input order."""

    def __init__(self, finished: list[PointResult], total: int) -> None:
        super().__init__(f"{len(finished)} of {plural(total, 'run')} finished")
        self.finished = finished
        self.total = total


@functools.cache
def _trace_requests(
    trace: str, final_call: str = "made", max_model_len: int | None = None, agent_token_scale: float = 1.0
) -> tuple[WorkloadRequest, ...]:
    if trace == AGENT_TRACE:  # the arrivals draw from a fixed pool of sessions, as from a trace's requests
        pool = generate(
            AGENT_POOL_SESSIONS, AGENT_POOL_SEED, token_scale=agent_token_scale, max_context_tokens=max_model_len
        )
        return tuple(pool.requests)
    path = DEFAULT_TRACES.get(trace, trace)
    return tuple(load_trace(path, final_call=final_call, max_model_len=max_model_len))


def _point_requests(point: SimPoint) -> tuple[WorkloadRequest, ...]:
    return _trace_requests(point.trace, point.final_call, point.max_model_len, point.agent_token_scale)


def _check_point(point: SimPoint) -> None:
    """Fails on a bad trace, profile, or a profile without KV capacity when the point gives none."""
    _point_requests(point)
    cost = load_cost_model(point.profile)
    if point.kv_capacity_tokens is None and cost.kv_capacity_tokens is None:
        raise ValueError(
            f"cost profile {point.profile!r} carries no KV capacity (kv_capacity_tokens): "
            "pass --kv-tokens (or --kv-model) to give the simulated KV memory"
        )


def run_point(point: SimPoint) -> PointResult:
    cost = load_cost_model(point.profile)
    engine = simulated_engine(
        cost,
        point.scheduler_config(),
        kv_capacity_tokens=point.kv_capacity_tokens,
        page_size=PAGE_SIZE,
        max_model_len=point.max_model_len,
    )
    arrivals = poisson_arrivals(_point_requests(point), point.rate, point.window, point.seed)
    result = run_workload(engine, arrivals, window=point.window, progress=False)
    slo = slo_from_cost(cost, point.max_model_len, point.slo_scale)
    metrics = result.metrics(slo=slo, sessions=point.trace == AGENT_TRACE)
    return PointResult(point, point.columns() | metrics, result.curves())


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _run_serially(points: Sequence[SimPoint]) -> Iterator[tuple[int, PointResult]]:
    for i, point in enumerate(points):
        yield i, run_point(point)


def _init_worker() -> None:
    """Workers leave Ctrl-C to the parent, which terminates them; so that nothing leaks then, their (silent)
    progress bars lock with a thread lock instead of tqdm's default semaphore."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tqdm.set_lock(threading.RLock())


def _terminate(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Kills the workers, then shuts the pool down: its manager thread finds them gone, fails the queued runs
    and releases the queues (``terminate_workers`` from Python 3.14 does the same)."""
    for process in list((pool._processes or {}).values()):
        process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def _run_in_processes(points: Sequence[SimPoint], jobs: int) -> Iterator[tuple[int, PointResult]]:
    """Yields (index, result) as runs finish, longest first; stops the workers at once if not run to the end."""
    # spawn, not fork: the parent may hold JAX's threads, which a fork would copy in an unknown state
    context = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker)
    try:
        longest_first = sorted(range(len(points)), key=lambda i: -points[i].rate * points[i].window)
        futures = {pool.submit(run_point, points[i]): i for i in longest_first}
        for future in concurrent.futures.as_completed(futures):
            yield futures[future], future.result()
    except BaseException:  # Ctrl-C, a failed run, or the consumer closing early
        _terminate(pool)
        raise
    pool.shutdown()


def run_grid(points: Sequence[SimPoint], jobs: int | None = None, progress: bool = True) -> list[PointResult]:
    """Runs every point (in ``jobs`` processes; 1 = in this process) and returns results in input order.

    On Ctrl-C raises ``GridInterrupted`` with the finished runs, within moments: queued runs are dropped
    and the running ones killed.
    """
    for point in points:  # fail before any work on a bad trace or profile
        _check_point(point)
    jobs = min(jobs or default_jobs(), len(points))
    done: dict[int, PointResult] = {}
    runs = _run_serially(points) if jobs <= 1 else _run_in_processes(points, jobs)
    try:
        with (
            contextlib.closing(runs),
            tqdm(total=len(points), desc="simulated runs", unit="run", disable=not progress) as bar,
        ):
            for i, result in runs:
                done[i] = result
                bar.update()
    except KeyboardInterrupt:
        raise GridInterrupted([done[i] for i in sorted(done)], len(points)) from None
    return [done[i] for i in range(len(points))]

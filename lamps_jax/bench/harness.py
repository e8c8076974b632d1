"""Runs a workload through the engine under one policy: simulated (virtual clock) or real (wall clock).

Requests enter at their arrival times; the loop steps the engine, lets the clock pass when nothing
can run (to the next API return or arrival), and samples KV memory after every step. The result
holds every request's output, the memory trace, the strategy counts and the run's duration.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from lamps_jax.bench.metrics import SLO, MemoryTrace, summarize
from lamps_jax.engine import LLMEngine
from lamps_jax.request import RequestOutput, RequestStatus, SamplingParams
from lamps_jax.workload.spec import WorkloadRequest


@dataclass
class RunCurves:
    """What a run's plots need: E2E latencies of its finished requests and KV pages in use over time."""

    label: str
    latencies: list[float]
    memory: MemoryTrace


@dataclass
class RunResult:
    policy: str
    outputs: list[RequestOutput]
    memory: MemoryTrace
    strategy_counts: dict[str, int]
    prefix_cache_pages: dict[str, int]  # full pages looked up in the prefix cache ("queried") and found ("hit")
    duration: float  # clock seconds from the first arrival to the last finish
    iterations: int
    wall_seconds: float
    window: float | None

    def metrics(self, slo: SLO | None = None, sessions: bool = False) -> dict[str, float]:
        """``summarize``'s metrics (with goodput under ``slo``, session completion times) and the run's counts."""
        return (
            summarize(self.outputs, self.duration, self.window, slo, sessions)
            | {
                "memory_waste": self.memory.waste_share(),
                "iterations": self.iterations,
                "wall_seconds": self.wall_seconds,
            }
            | {f"strategy_{k}": v for k, v in self.strategy_counts.items()}
            | {f"prefix_pages_{k}": v for k, v in self.prefix_cache_pages.items()}
        )

    def curves(self) -> RunCurves:
        finished = sorted(o.latency for o in self.outputs if o.finish_reason in ("stop", "length"))
        return RunCurves(self.policy, finished, self.memory)


def distinct_prompt(num_tokens: int, index: int, vocab_size: int) -> list[int]:
    """A filler prompt whose first token tells arrival ``index`` apart: no two arrivals share a cached prefix
    (the prefix cache chains page hashes from the first page), as distinct conversations would not."""
    return [2 + index % (vocab_size - 2)] + [1] * (num_tokens - 1)


def run_workload(
    engine: LLMEngine,
    workload: Sequence[WorkloadRequest],
    window: float | None = None,
    progress: bool = True,
    max_clock: float | None = None,
    memory_interval: float = 0.05,
) -> RunResult:
    """Serves ``workload`` (with arrival times) to completion, or until the clock passes ``max_clock``.

    KV memory is sampled after a step once ``memory_interval`` clock seconds have passed since the last
    sample (every step of a real model; every few simulated ones), and after the last step.
    """
    pending = deque(sorted(workload, key=lambda r: r.arrival_time))
    vocab = engine.model_config.vocab_size
    start_clock, start_wall = engine.clock.now(), time.perf_counter()
    outputs: list[RequestOutput] = []
    memory = MemoryTrace()
    pool, scheduler = engine.page_pool, engine.scheduler
    iterations = added = 0
    with tqdm(total=len(pending), desc=scheduler.policy.name, disable=not progress, leave=False) as bar:
        while pending or engine.has_unfinished_requests():
            now = engine.clock.now() - start_clock
            if max_clock is not None and now > max_clock:
                break
            while pending and pending[0].arrival_time <= now:
                r = pending.popleft()
                added += 1
                engine.add_request(
                    distinct_prompt(r.prompt_tokens, added, vocab),
                    SamplingParams(ignore_eos=True),
                    r.request_id,
                    r.segments,
                    arrival_time=start_clock + r.arrival_time,
                )
            finished = engine.step()
            iterations += 1
            outputs += finished
            bar.update(len(finished))
            now = engine.clock.now() - start_clock
            if not memory.times or now - memory.times[-1] >= memory_interval or not engine.has_unfinished_requests():
                paused = sum(len(q.page_ids) for q in scheduler.paused.values() if q.status is RequestStatus.PAUSED_API)
                memory.record(now, pool.num_usable - pool.num_free, paused)
            next_arrival = start_clock + pending[0].arrival_time if pending else None
            if not engine.has_unfinished_requests() and next_arrival is not None:
                engine.clock.wait_until(next_arrival)
            else:
                engine.wait_for_work(until=next_arrival)
    for req_id in list(scheduler.requests):  # cut off at max_clock: count as unfinished
        outputs.append(engine.abort_request(req_id))
    return RunResult(
        policy=scheduler.policy.name,
        outputs=outputs,
        memory=memory,
        strategy_counts=dict(scheduler.strategy_counts),
        prefix_cache_pages=dict(scheduler.prefix_cache_pages),
        duration=engine.clock.now() - start_clock,
        iterations=iterations,
        wall_seconds=time.perf_counter() - start_wall,
        window=window,
    )

"""Cost of one ``schedule()`` call with many waiting requests, per policy, side by side in one run.

A scheduler holds 32 running requests that fill the KV pages, so the N waiting ones (augmented
requests with random scripted calls) stay queued. Reported: mean, p99 and max microseconds per
``schedule()`` for each policy, for N = 100, 1,000 and 10,000 (by default). The waiting queue is a heap
(``scheduler/waiting_queue.py``), so no policy walks the whole queue in an iteration.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lamps_jax.bench.wording import plural, print_written
from lamps_jax.clock import WallClock
from lamps_jax.config import SchedulerConfig
from lamps_jax.paged_kv.page_pool import PagePool
from lamps_jax.request import ApiCall, Request, SamplingParams, Segment
from lamps_jax.scheduler.output import RunnerOutput
from lamps_jax.scheduler.scheduler import Scheduler

POLICIES = ("vllm", "infercept", "lamps")


def _request(i: int, rng: random.Random) -> Request:
    segments = [
        Segment(
            rng.randint(5, 200),
            ApiCall(rng.choice(["math", "qa", "chat"]), duration=1.0, result_token_ids=(1,) * rng.randint(1, 50)),
        )
        for _ in range(rng.randint(0, 3))
    ] + [Segment(rng.randint(5, 200))]
    max_tokens = sum(s.num_tokens + len(s.result_token_ids) for s in segments)
    return Request(
        str(i),
        [1] * rng.randint(20, 600),
        SamplingParams(max_tokens=max_tokens),
        float(i),
        seed=0,
        segments=tuple(segments),
    )


def _time_schedule(policy: str, num_waiting: int, iterations: int) -> list[float]:
    rng = random.Random(0)
    config = SchedulerConfig(policy=policy, max_num_seqs=32, max_num_batched_tokens=384, starvation_scope="all")
    scheduler = Scheduler(config, PagePool(32 * 40 + 1), 16, 8192, WallClock())
    for i in range(num_waiting + 32):
        scheduler.add_request(_request(i, rng))
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        out = scheduler.schedule()
        times.append(time.perf_counter() - start)
        sampled = [c.req_id for c in out.scheduled if c.samples]
        scheduler.update(out, RunnerOutput(sampled, [1] * len(sampled), 0.0))
    return times


def run_scheduler_benchmark(sizes: list[int], iterations: int, output_dir: Path) -> list[dict]:
    rows = []
    for num_waiting in sizes:
        for policy in POLICIES:
            times = sorted(_time_schedule(policy, num_waiting, iterations))
            rows.append(
                {
                    "policy": policy,
                    "waiting": num_waiting,
                    "mean_us": statistics.mean(times) * 1e6,
                    "p99_us": times[min(len(times) - 1, int(0.99 * len(times)))] * 1e6,
                    "max_us": times[-1] * 1e6,
                }
            )
    table = Table(title=f"schedule() time per iteration, {plural(iterations, 'iteration')} each")
    for column in rows[0]:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(row["policy"], str(row["waiting"]), *(f"{row[k]:.0f}" for k in ("mean_us", "p99_us", "max_us")))
    Console().print(table)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "scheduler_overhead.json"
    path.write_text(json.dumps(rows, indent=2) + "\n")
    print_written([path])
    return rows

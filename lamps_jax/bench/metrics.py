"""Latency and efficiency metrics of one run, computed from the requests' outputs and timelines.

Per run: end-to-end latency and time to first token (mean, median, p99), normalized latency
((E2E - API time) / generated tokens, INFERCEPT's metric), time per output token, throughput
(requests/s, generated tokens/s), preemptions (running requests sent back to wait, their KV
dropped), memory waste (share of the KV memory-time held by paused requests on the device), the
strategy chosen per API call, and how many requests finished in the window.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from lamps_jax.request import RequestOutput


def api_time(output: RequestOutput) -> float:
    """Seconds the request spent paused for API calls, from its timeline."""
    return sum(t1 - t0 for (status, t0), (_, t1) in itertools.pairwise(output.timeline) if status == "paused_api")


PREEMPTED_TO = ("waiting", "swapped")  # a running request sent back: to be recomputed, or swapped out whole


def preemptions(output: RequestOutput) -> int:
    """Times the request was sent back while running: to waiting (its KV dropped, to be recomputed) or to
    the host (all its pages swapped out)."""
    return sum(1 for (a, _), (b, _) in itertools.pairwise(output.timeline) if a == "running" and b in PREEMPTED_TO)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def _summary(prefix: str, values: list[float]) -> dict[str, float]:
    if not values:
        return {f"{prefix}_mean": float("nan"), f"{prefix}_median": float("nan"), f"{prefix}_p99": float("nan")}
    return {
        f"{prefix}_mean": statistics.fmean(values),
        f"{prefix}_median": statistics.median(values),
        f"{prefix}_p99": percentile(values, 99),
    }


@dataclass
class MemoryTrace:
    """KV pages over time: in use, and held on the device by paused requests."""

    times: list[float] = field(default_factory=list)
    used_pages: list[int] = field(default_factory=list)
    paused_pages: list[int] = field(default_factory=list)

    def record(self, now: float, used: int, paused: int) -> None:
        self.times.append(now)
        self.used_pages.append(used)
        self.paused_pages.append(paused)

    def waste_share(self) -> float:
        """Paused pages x time over used pages x time."""
        used = paused = 0.0
        for i in range(1, len(self.times)):
            dt = self.times[i] - self.times[i - 1]
            used += self.used_pages[i - 1] * dt
            paused += self.paused_pages[i - 1] * dt
        return paused / used if used else 0.0


def summarize(outputs: Sequence[RequestOutput], duration: float, window: float | None = None) -> dict[str, float]:
    done = [o for o in outputs if o.finished and o.finish_reason in ("stop", "length")]
    e2e = [o.latency for o in done]
    ttft = [o.time_to_first_token for o in done if o.time_to_first_token is not None]
    normalized = [(o.latency - api_time(o)) / o.num_generated_tokens for o in done if o.num_generated_tokens]
    tpot = [
        (o.latency - api_time(o) - o.time_to_first_token) / (o.num_generated_tokens - 1)
        for o in done
        if o.num_generated_tokens > 1 and o.time_to_first_token is not None
    ]
    generated = sum(o.num_generated_tokens for o in done)
    result = {
        "requests": len(outputs),
        "finished": len(done),
        "errors": len(outputs) - len(done),
        "preemptions": sum(preemptions(o) for o in outputs),
    }
    result |= _summary("e2e", e2e) | _summary("ttft", ttft) | _summary("normalized", normalized)
    result |= _summary("tpot", tpot)
    result |= {
        "throughput_rps": len(done) / duration if duration else 0.0,
        "throughput_tps": generated / duration if duration else 0.0,
    }
    if window is not None:
        result["finished_in_window"] = sum(1 for o in done if o.timeline and o.timeline[-1][1] <= window)
    return result

"""Arrival processes: when each request of a workload reaches the engine.

``poisson_arrivals`` is the papers' setup: requests drawn with replacement from a pool (a trace or a
generated sample) at the times of a Poisson process of ``rate`` requests/s over ``[0, duration)``, each draw
renamed ``"<i>-<original id>"`` so that repeats stay distinct. ``replay_arrivals`` sets given timestamps.
Both return requests in arrival order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from lamps_jax.workload.spec import WorkloadRequest


def poisson_arrivals(
    requests: Sequence[WorkloadRequest], rate: float, duration: float, seed: int = 0
) -> list[WorkloadRequest]:
    """Poisson(rate * duration) draws from ``requests`` at sorted uniform times in [0, duration)."""
    if not requests:
        raise ValueError("poisson_arrivals needs at least one request to draw from")
    if not (math.isfinite(rate) and rate > 0 and math.isfinite(duration) and duration > 0):
        raise ValueError(f"rate and duration must be finite and > 0, got {rate}, {duration}")
    rng = np.random.default_rng(seed)
    num_arrivals = int(rng.poisson(rate * duration))
    times = np.sort(rng.uniform(0.0, duration, size=num_arrivals))
    picks = rng.integers(len(requests), size=num_arrivals)
    return [
        replace(requests[p], request_id=f"{i}-{requests[p].request_id}", arrival_time=float(t))
        for i, (p, t) in enumerate(zip(picks, times))
    ]


def replay_arrivals(requests: Sequence[WorkloadRequest], timestamps: Sequence[float]) -> list[WorkloadRequest]:
    """Request i arrives at ``timestamps[i]``; ids are kept. Sorted by arrival (stable for equal times)."""
    if len(requests) != len(timestamps):
        raise ValueError(f"{len(requests)} requests but {len(timestamps)} timestamps")
    arrived = [request.with_arrival(float(t)) for request, t in zip(requests, timestamps)]
    return sorted(arrived, key=lambda request: request.arrival_time)

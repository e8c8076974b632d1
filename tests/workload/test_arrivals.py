"""Arrival processes: Poisson draws with replacement, and replayed timestamps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lamps_jax.workload.arrivals import poisson_arrivals, replay_arrivals
from lamps_jax.workload.spec import CallSpec, WorkloadRequest, build_request


def make_requests(n: int) -> list[WorkloadRequest]:
    return [build_request(f"r{i}", 5 + i, [3, 4], [CallSpec("qa", 0.5, 2)]) for i in range(n)]


def test_poisson_count_order_and_gaps() -> None:
    rate, duration = 5.0, 1800.0
    arrivals = poisson_arrivals(make_requests(20), rate=rate, duration=duration, seed=0)
    expected = rate * duration
    assert abs(len(arrivals) - expected) < 4 * math.sqrt(expected)
    times = np.array([r.arrival_time for r in arrivals])
    assert np.all(np.diff(times) >= 0) and times[0] >= 0 and times[-1] < duration
    assert np.diff(times).mean() == pytest.approx(1 / rate, rel=0.05)


def test_poisson_draws_with_replacement_and_fresh_ids() -> None:
    pool = make_requests(3)
    arrivals = poisson_arrivals(pool, rate=10.0, duration=10.0, seed=1)
    assert len({r.request_id for r in arrivals}) == len(arrivals)
    originals = {r.request_id: r for r in pool}
    for i, request in enumerate(arrivals):
        index, original_id = request.request_id.split("-", 1)
        assert index == str(i)
        assert request.segments == originals[original_id].segments
    assert len({r.request_id.split("-", 1)[1] for r in arrivals}) == 3


def test_poisson_is_seeded() -> None:
    pool = make_requests(4)
    assert poisson_arrivals(pool, 3.0, 50.0, seed=7) == poisson_arrivals(pool, 3.0, 50.0, seed=7)
    assert poisson_arrivals(pool, 3.0, 50.0, seed=7) != poisson_arrivals(pool, 3.0, 50.0, seed=8)


@pytest.mark.parametrize(("rate", "duration"), [(0.0, 10.0), (1.0, -1.0), (float("inf"), 1.0)])
def test_poisson_rejects_bad_arguments(rate: float, duration: float) -> None:
    with pytest.raises(ValueError):
        poisson_arrivals(make_requests(1), rate, duration)
    with pytest.raises(ValueError, match="at least one request"):
        poisson_arrivals([], 1.0, 1.0)


def test_replay_sets_times_and_sorts() -> None:
    replayed = replay_arrivals(make_requests(3), [2.0, 0.5, 2.0])
    assert [(r.request_id, r.arrival_time) for r in replayed] == [("r1", 0.5), ("r0", 2.0), ("r2", 2.0)]
    with pytest.raises(ValueError, match="timestamps"):
        replay_arrivals(make_requests(2), [1.0])
    with pytest.raises(ValueError, match="arrival_time"):
        replay_arrivals(make_requests(1), [-1.0])

"""The policy plug-in: what differs between schedulers, with FCFS and one fixed KV strategy as defaults.

A policy decides (a) where a request enters the waiting queue and which waiting request is admitted
next, (b) the victim when pages run out, (c) the KV strategy of an API call, and optionally (d)
which paused requests to swap out with the iteration's swap budget. The budget loop itself lives in
``scheduler.py`` and is the same for every policy.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lamps_jax.config import SchedulerConfig
from lamps_jax.request import ApiCall, KVStrategy, Request
from lamps_jax.scheduler.cost_model import CostModel
from lamps_jax.scheduler.waste import cheapest_strategy

if TYPE_CHECKING:
    from lamps_jax.scheduler.scheduler import Scheduler


class Policy:
    """FCFS by arrival, the latest arrival preempted first, the configured strategy for every call."""

    name = "fcfs"

    def __init__(self, config: SchedulerConfig, cost: CostModel) -> None:
        self.config = config
        self.cost = cost
        self.fixed_strategy = KVStrategy(config.kv_strategy)

    def enqueue(self, scheduler: Scheduler, request: Request, reason: str) -> None:
        """Inserts ``request`` (reason: arrival, resume or preempted) into ``scheduler.waiting``."""
        if reason == "preempted":
            scheduler.waiting.insert(0, request)
        else:
            bisect.insort(scheduler.waiting, request, key=lambda r: r.arrival_time)

    def next_waiting(self, waiting: Sequence[Request]) -> Request:
        return waiting[0]

    def on_iteration(self, scheduler: Scheduler) -> None:
        """Called at the start of every ``schedule()``."""

    def after_admission(self, scheduler: Scheduler) -> None:
        """Called once ``schedule()`` has admitted what fits; ``scheduler.waiting`` holds the passed-over."""

    def choose_victim(self, candidates: Sequence[Request]) -> Request:
        return max(candidates, key=lambda r: r.arrival_time)

    def strategy_for_call(self, request: Request, call: ApiCall, scheduler: Scheduler) -> KVStrategy:
        return self.fixed_strategy

    def on_api_return(self, request: Request, call: ApiCall, elapsed: float) -> None:
        """Called when a call's result arrives (predictors learn from it)."""

    def on_resume(self, scheduler: Scheduler, request: Request) -> None:
        """Called for every resumed request, whatever its strategy, once the call's result is appended
        and before the request is queued again: anything planned for the call that ended is stale."""

    def swap_candidates(self, scheduler: Scheduler) -> list[Request]:
        """Paused, preserved requests to move to host memory now, most urgent first."""
        return []


def cheapest_strategy_now(
    request: Request, api_time: float, scheduler: Scheduler, cost: CostModel, allow_swap: bool
) -> KVStrategy:
    """The cheapest strategy for a call starting now: the request's whole context, the batch as it runs."""
    running = sum(r.num_tokens for r in scheduler.running if r is not request)
    return cheapest_strategy(
        context=request.num_tokens,
        api_time=api_time,
        other_context=running,
        batch_context=running + request.num_tokens,
        cost=cost,
        allow_swap=allow_swap,
    )

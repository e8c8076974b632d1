"""The policy plug-in: what differs between schedulers, with FCFS and one fixed KV strategy as defaults.

A policy decides (a) the waiting queue's order (its key, where a request enters, whether waiting requests
age into a starved class), (b) the victim when pages run out and whether victims are recomputed or
swapped, (c) the KV strategy of an API call, and (d) what it believes about a call's duration. Each
policy also names the admission and swap budget its authors' system used (``anchor_admission``,
``anchor_swap_budget``), which a simulated comparison applies unless told otherwise. The budget loop
itself lives in ``scheduler.py`` and is the same for every policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lamps_jax.config import SchedulerConfig
from lamps_jax.request import ApiCall, KVStrategy, Request
from lamps_jax.scheduler.cost_model import CostModel
from lamps_jax.scheduler.predictors import ApiTimePredictor
from lamps_jax.scheduler.waste import cheapest_strategy

if TYPE_CHECKING:
    from lamps_jax.scheduler.scheduler import Scheduler


class Policy:
    """FCFS by arrival, the latest arrival preempted first, the configured strategy for every call."""

    name = "fcfs"
    anchor_admission = "chunk"  # SchedulerConfig.admission of the system this policy reproduces
    anchor_swap_budget = "fixed"  # SchedulerConfig.swap_budget of that system
    preempts_by_swap = False  # victims lose their tail to the host (INFERCEPT) instead of being recomputed
    starvation_threshold: int | None = None  # waiting requests age into a starved class served first

    def __init__(self, config: SchedulerConfig, cost: CostModel) -> None:
        self.config = config
        self.cost = cost
        self.fixed_strategy = KVStrategy(config.kv_strategy)
        self.api_times = ApiTimePredictor()

    def waiting_key(self, request: Request) -> tuple:
        """The waiting queue's order, smallest first (ties: first queued first)."""
        return (request.arrival_time,)

    def enqueue(self, scheduler: Scheduler, request: Request, reason: str) -> None:
        """Queues ``request`` (reason: arrival, resume or preempted) in ``scheduler.waiting``."""
        if reason == "preempted":
            scheduler.waiting.push_front(request)
        else:
            scheduler.waiting.push(request)

    def on_iteration(self, scheduler: Scheduler) -> None:
        """Called at the start of every ``schedule()``."""

    def admits(self, scheduler: Scheduler, request: Request, num_new: int) -> bool:
        """Whether chunk admission may start ``request`` now with ``num_new`` tokens (its pages are free)."""
        return True

    def choose_victim(self, scheduler: Scheduler, running: Sequence[Request]) -> Request | None:
        """The request to lose pages; ``running``: the running ones this step may still preempt."""
        return max(running, key=lambda r: r.arrival_time, default=None)

    def strategy_for_call(self, request: Request, call: ApiCall, scheduler: Scheduler) -> KVStrategy:
        return self.fixed_strategy

    def token_budget(self, scheduler: Scheduler) -> int:
        """Tokens this iteration may compute (prefill chunks, recomputes, decodes): the configured budget B."""
        return self.config.max_num_batched_tokens

    def on_api_return(self, request: Request, call: ApiCall, elapsed: float) -> None:
        """Called when a call's result arrives (predictors learn from it)."""
        self.api_times.observe(call.name, elapsed)

    def on_resume(self, scheduler: Scheduler, request: Request) -> None:
        """Called for every resumed request, whatever its strategy, once the call's result is appended
        and before the request is queued again: anything planned for the call that ended is stale."""

    def api_time(self, call: ApiCall) -> float:
        """A call's duration as the policy believes it before it starts: the truth when the call carries one
        and ``api_time_source`` is ``oracle`` (the reference systems' simulated runs), else the type's mean."""
        if self.config.api_time_source == "oracle" and call.duration is not None:
            return call.duration
        return self.api_times.predict(call.name)

    def remaining_api_time(self, call: ApiCall, elapsed: float) -> float:
        """Seconds a call running for ``elapsed`` seconds has left, as the policy believes it."""
        if self.config.api_time_source == "oracle" and call.duration is not None:
            return call.duration - elapsed  # INFERCEPT's api_remaining_time: not clamped (vllm/sequence.py:406)
        return self.api_times.predict_remaining(call.name, elapsed)


def cheapest_strategy_now(
    request: Request, api_time: float, scheduler: Scheduler, cost: CostModel, allow_swap: bool, overlapped: bool = False
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
        running_tokens=len(scheduler.running),
        swap_overlapped=overlapped,
    )

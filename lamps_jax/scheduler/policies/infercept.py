"""INFERCEPT: FCFS by arrival; each call preserves or discards, whichever wastes less; swap budget to the worst.

At the call, the API time is the per-type mean (no time has elapsed yet) and the choice is the cheaper
of Preserve (T·C) and chunked Discard. Every iteration the swap budget goes to the paused, preserved
requests wasting the most memory right now: context x the call's expected remaining time given how
long it has already run (residual life), so long-running calls are moved to host memory first.
"""

from __future__ import annotations

from lamps_jax.config import SchedulerConfig
from lamps_jax.request import ApiCall, KVStrategy, Request, RequestStatus
from lamps_jax.scheduler.cost_model import CostModel
from lamps_jax.scheduler.policies.base import Policy, cheapest_strategy_now
from lamps_jax.scheduler.predictors import ApiTimePredictor


class InferceptPolicy(Policy):
    name = "infercept"

    def __init__(self, config: SchedulerConfig, cost: CostModel) -> None:
        super().__init__(config, cost)
        self.api_times = ApiTimePredictor()

    def strategy_for_call(self, request: Request, call: ApiCall, scheduler) -> KVStrategy:
        return cheapest_strategy_now(request, self.api_times.predict(call.name), scheduler, self.cost, False)

    def on_api_return(self, request: Request, call: ApiCall, elapsed: float) -> None:
        self.api_times.observe(call.name, elapsed)

    def swap_candidates(self, scheduler) -> list[Request]:
        now = scheduler.clock.now()
        preserved = [
            r
            for r in scheduler.paused.values()
            if r.strategy is KVStrategy.PRESERVE and r.page_ids and r.status is RequestStatus.PAUSED_API
        ]

        def waste(r: Request) -> float:
            elapsed = now - r.events[-1][1]
            return len(r.page_ids) * self.api_times.predict_remaining(r.api_call.name, elapsed)

        return sorted(preserved, key=waste, reverse=True)

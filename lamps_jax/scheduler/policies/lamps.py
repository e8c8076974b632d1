"""LAMPS: rank waiting requests by predicted memory-over-time, with the call strategy fixed ahead.

At arrival and at every resume (whatever the last call's strategy was) the request's next call is
forecast (pre-API length from the length predictor, API time from the per-type mean), the cheapest
strategy is fixed for that call and used once, and the request's score is the predicted
memory-time area under that strategy (``waste.memory_time_score``).
Waiting requests are admitted in ascending score; one passed over for ``starvation_threshold``
iterations goes to the front. Scores are computed once per segment (arrival, resume) and cached;
the queue is fully re-sorted every ``resort_interval`` iterations (0 = every iteration), which is
also when starved requests move up, with ordered insertion in between.
``lamps_no_rank`` keeps the strategies and admits in arrival order (the paper's ablation).
"""

from __future__ import annotations

import bisect

from lamps_jax.config import SchedulerConfig
from lamps_jax.request import ApiCall, KVStrategy, Request
from lamps_jax.scheduler.cost_model import CostModel
from lamps_jax.scheduler.policies.base import Policy, cheapest_strategy_now
from lamps_jax.scheduler.policies.forecast import forecast
from lamps_jax.scheduler.predictors import ApiTimePredictor, NoisyOraclePredictor
from lamps_jax.scheduler.waste import cheapest_strategy, memory_time_score


class LampsPolicy(Policy):
    name = "lamps"
    rank = True

    def __init__(self, config: SchedulerConfig, cost: CostModel) -> None:
        super().__init__(config, cost)
        self.lengths = NoisyOraclePredictor(config.length_noise, config.predictor_seed)
        self.api_times = ApiTimePredictor()
        self.iteration = 0

    def _sort_key(self, request: Request) -> tuple[bool, float]:
        rank = request.priority if self.rank else request.arrival_time
        return (request.iterations_waited < self.config.starvation_threshold, rank)

    def plan(self, request: Request, scheduler) -> None:
        """Forecasts the request's next call, fixes its strategy and caches its score."""
        f = forecast(request, self.lengths, self.api_times)
        strategy = None
        if f.api_type is not None:
            running = sum(r.num_tokens for r in scheduler.running if r is not request)
            strategy = cheapest_strategy(
                context=f.context + f.pre_api_tokens,
                api_time=f.api_time,
                other_context=running,
                batch_context=running + f.context + f.pre_api_tokens,
                cost=self.cost,
                allow_swap=scheduler.host_pool is not None,
            )
        request.planned_strategy = strategy
        request.priority = memory_time_score(
            f.context,
            f.pre_api_tokens,
            f.api_time,
            f.returned_tokens,
            f.post_api_tokens,
            strategy or KVStrategy.PRESERVE,
            self.cost,
        )

    def enqueue(self, scheduler, request: Request, reason: str) -> None:
        if reason == "arrival":
            self.plan(request, scheduler)  # a resumed request was planned in on_resume
        if reason == "preempted":
            super().enqueue(scheduler, request, reason)
        else:
            bisect.insort(scheduler.waiting, request, key=self._sort_key)

    def on_resume(self, scheduler, request: Request) -> None:
        """Every resume starts a new segment: plan its call and score what is left, whatever the strategy."""
        self.plan(request, scheduler)

    def on_iteration(self, scheduler) -> None:
        """Every ``resort_interval`` iterations (0: every one), a full sort by cached score, starved first."""
        self.iteration += 1
        interval = self.config.resort_interval
        if interval == 0 or self.iteration % interval == 0:
            scheduler.waiting.sort(key=self._sort_key)

    def after_admission(self, scheduler) -> None:
        for request in scheduler.waiting:
            request.iterations_waited += 1

    def strategy_for_call(self, request: Request, call: ApiCall, scheduler) -> KVStrategy:
        """The strategy planned for this call, used once; a call nobody forecast (a detected tool call)
        gets the cheapest strategy for its context and the call type's predicted time now."""
        strategy, request.planned_strategy = request.planned_strategy, None
        if strategy is not None:
            return strategy
        api_time = self.api_times.predict(call.name)
        return cheapest_strategy_now(request, api_time, scheduler, self.cost, scheduler.host_pool is not None)

    def on_api_return(self, request: Request, call: ApiCall, elapsed: float) -> None:
        self.api_times.observe(call.name, elapsed)


class LampsNoRankPolicy(LampsPolicy):
    name = "lamps_no_rank"
    rank = False

"""LAMPS: rank waiting requests by predicted memory-over-time, with the call strategy fixed ahead.

At arrival and at every resume (whatever the last call's strategy was) the request's next call is
forecast (pre-API length from the length predictor, API time from ``Policy.api_time``), the cheapest
strategy is fixed for that call and used once, and the request's score is the predicted memory-time
area under that strategy (``waste.memory_time_score``), with decode iterations timed as a full
iteration f(B) as the LAMPS code does (``score_step="saturated"``; mars-codebase ``vllm/core/policy.py:34-45``)
or as one decode f(1). Waiting requests sit in a heap by score, computed once per segment; preempted
requests are re-ranked by score like any other (mars-codebase ``scheduler_v2.py``, ``_preempt_by_recompute``).
A request that has waited ``starvation_threshold`` iterations is served before the rest, in score
order among the starved (mars-codebase ``scheduler_v2.py:839-850``); only requests that ran before age
(``starvation_scope="started"``, as there) unless every waiting request does (``"all"``).
Victims when pages run out: the paused, preserved request holding the most memory-time, then the
latest-arrived running request; both are recomputed (the code's ``passive_discard_by_order`` always
discards, lines 411-421), and swaps are not budgeted (lines 928-930: ``swap_budget="unlimited"``).
``lamps_no_rank`` keeps the strategies and admits in arrival order (the paper's ablation).
"""

from __future__ import annotations

from collections.abc import Sequence

from lamps_jax.config import SchedulerConfig
from lamps_jax.request import ApiCall, KVStrategy, Request, RequestStatus
from lamps_jax.scheduler.cost_model import CostModel
from lamps_jax.scheduler.policies.base import Policy, cheapest_strategy_now
from lamps_jax.scheduler.policies.forecast import Forecast, forecast
from lamps_jax.scheduler.predictors import make_length_predictor
from lamps_jax.scheduler.waste import cheapest_strategy, memory_time_score


class LampsPolicy(Policy):
    name = "lamps"
    anchor_swap_budget = "unlimited"
    rank = True

    def __init__(self, config: SchedulerConfig, cost: CostModel) -> None:
        super().__init__(config, cost)
        self.lengths = make_length_predictor(config.length_predictor, config.length_noise, config.predictor_seed)
        self.starvation_threshold = config.starvation_threshold
        saturated = config.score_step == "saturated"
        self.score_step_time = cost.iteration_time(cost.token_budget if saturated else 1)

    def waiting_key(self, request: Request) -> tuple:
        return (request.priority if self.rank else request.arrival_time,)

    def forecast_next(self, request: Request) -> Forecast:
        """What the policy believes about the request's next segment and call."""
        return forecast(request, self.lengths, self.api_time)

    def plan(self, request: Request, scheduler) -> Forecast:
        """Forecasts the request's next call, fixes its strategy and caches its score; returns the forecast."""
        f = self.forecast_next(request)
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
                running_tokens=len(scheduler.running),
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
            step_time=self.score_step_time,
        )
        return f

    def enqueue(self, scheduler, request: Request, reason: str) -> None:
        if reason == "arrival":
            self.plan(request, scheduler)  # a resumed request was planned in on_resume
        ages = self.config.starvation_scope == "all" or reason != "arrival"
        scheduler.waiting.push(request, scheduler.iteration, ages=ages)

    def on_resume(self, scheduler, request: Request) -> None:
        """Every resume starts a new segment: plan its call and score what is left, whatever the strategy."""
        self.plan(request, scheduler)

    def on_iteration(self, scheduler) -> None:
        scheduler.waiting.promote_starved(scheduler.iteration)

    def choose_victim(self, scheduler, running: Sequence[Request]) -> Request | None:
        now = scheduler.clock.now()
        preserved = [
            r
            for r in scheduler.paused.values()
            if r.strategy is KVStrategy.PRESERVE and r.page_ids and r.status is RequestStatus.PAUSED_API
        ]
        if preserved:
            return max(
                preserved,
                key=lambda r: len(r.page_ids) * self.remaining_api_time(r.api_call, now - r.events[-1][1]),
            )
        return super().choose_victim(scheduler, running)

    def strategy_for_call(self, request: Request, call: ApiCall, scheduler) -> KVStrategy:
        """The strategy planned for this call, used once; a call nobody forecast (a detected tool call)
        gets the cheapest strategy for its context and the call's expected time now."""
        strategy, request.planned_strategy = request.planned_strategy, None
        if strategy is not None:
            return strategy
        allow_swap = scheduler.host_pool is not None
        return cheapest_strategy_now(request, self.api_time(call), scheduler, self.cost, allow_swap)


class LampsNoRankPolicy(LampsPolicy):
    name = "lamps_no_rank"
    rank = False

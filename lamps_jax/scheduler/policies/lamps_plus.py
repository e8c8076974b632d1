"""LAMPS+: LAMPS's memory-over-time ranking and call strategies, with switches for what LAMPS loses on.

Each switch is one idea, on in ``lamps_plus`` and off in ``lamps_plus-no_<switch>`` (the ablation):

- ``aging``: the waiting order is the LAMPS score in units of a typical score, plus the arrival in the queue in
  units of ``AGING_HORIZON_S``: key = score / typical + t_enqueue / H, instead of LAMPS's promotion of requests
  passed over 100 iterations (which, past saturation, admits old requests in bursts and preempts running ones).
  A waiting request thus makes up one typical score every H seconds it waits, whatever the scale of the scores
  (a fixed exchange rate in token-seconds per second ages a trace of small scores far harder than one of large
  scores). The typical score is the geometric mean of the recent scores (an exponential moving average of their
  logarithm over about ``SCORE_EMA_PLANS`` plans); dividing the score by it, rather than multiplying the time
  by it, keeps the heap keys comparable when it drifts: a key is fixed when the request is queued, and
  key_i - key_j = score_i / typical_i - score_j / typical_j + (t_i - t_j) / H moves by a few percent of a
  score, not by the time since the start.
- ``reserve``: chunk admission starts a request only when the free pages also cover what every running request
  is predicted to grow in its next ``RESERVE_HORIZON_TOKENS`` decode steps (up to its predicted length at its
  next call), plus the same for the request admitted, so it does not admit requests it must preempt a few
  iterations later (LAMPS preempts, and recomputes, over a thousand requests in five minutes past saturation).
  Reserving each running request's whole predicted growth to its next call instead holds pages for growth
  seconds away, while requests that pause or finish free pages every iteration: fewer requests run and the
  mean latency rises. With nothing running it admits anyway.
- ``reconsider``: every iteration, while requests wait, a preserved paused request whose call is predicted to
  run on (its remaining time given the time elapsed) is moved to the cheaper of Swap and Discard when that
  is cheaper than keeping its pages for the rest of the call (a call past its type's mean is expected to run
  on as long as it has run). It matters when call durations are predicted
  (``api_time_source="type_mean"``): with the true durations (``oracle``) the strategy fixed at the call's
  start already knew how long it would last.
"""

from __future__ import annotations

import math
import weakref

from lamps_jax.config import SchedulerConfig
from lamps_jax.request import KVStrategy, Request
from lamps_jax.scheduler.cost_model import CostModel
from lamps_jax.scheduler.policies.forecast import Forecast
from lamps_jax.scheduler.policies.lamps import LampsPolicy
from lamps_jax.scheduler.waste import cheapest_strategy

SWITCHES = ("aging", "reserve", "reconsider")
# Seconds of waiting that make up one typical score. Half the light-load mean E2E of the multi-API trace
# (~62 s, mostly API time): a request passed over for longer than a request's usual lifetime overtakes ones of
# a few typical scores. Chosen on seeds 0-1 from 10, 30 and 60 s (10 s trades 2-3% of mean E2E for a lower p99
# TTFT; 60 s ages too little to move the p99); checked on seeds 2-3.
AGING_HORIZON_S = 30.0
# Plans averaged into the typical score: a few hundred (tens of seconds of traffic at saturation), so that one
# outlier does not move it and a change of workload does within a minute.
SCORE_EMA_PLANS = 256
# Decode steps of growth reserved per running request: 64 tokens = 4 pages of 16, ~1.8 s of saturated iterations
# (f(B) = 27.8 ms on gptj-6b-a100), in which requests that pause or finish free pages. Chosen on seeds 0-1 from
# 16, 64 and unbounded (the whole growth to the next call); checked on seeds 2-3.
RESERVE_HORIZON_TOKENS = 64


def parse_switches(policy_name: str) -> frozenset[str]:
    """The switches of ``lamps_plus`` or ``lamps_plus-no_<switch>[-no_<switch>...]``."""
    base, *off = policy_name.split("-")
    if base != LampsPlusPolicy.name:
        raise ValueError(f"not a LAMPS+ policy name: {policy_name!r}")
    unknown = [o for o in off if o.removeprefix("no_") not in SWITCHES or not o.startswith("no_")]
    if unknown:
        raise ValueError(
            f"unknown LAMPS+ switch in {policy_name!r}: {', '.join(unknown)}; "
            f"known: {', '.join('no_' + s for s in SWITCHES)}"
        )
    return frozenset(SWITCHES) - {o.removeprefix("no_") for o in off}


class LampsPlusPolicy(LampsPolicy):
    name = "lamps_plus"

    def __init__(self, config: SchedulerConfig, cost: CostModel) -> None:
        super().__init__(config, cost)
        self.switches = parse_switches(config.policy)
        if "aging" in self.switches:
            self.starvation_threshold = None
        self._predicted_end: weakref.WeakKeyDictionary[Request, int] = weakref.WeakKeyDictionary()  # at its next call
        self._log_score: float | None = None  # moving average of log(score): the typical score, for aging
        self._reserved_pages: int | None = None  # the running requests' predicted growth, this iteration

    # ---- ranking ----------------------------------------------------------------------------
    def waiting_key(self, request: Request) -> tuple:
        if "aging" not in self.switches:
            return super().waiting_key(request)
        typical = math.exp(self._log_score or 0.0)  # every queued request was planned first
        return (request.priority / typical + request.events[-1][1] / AGING_HORIZON_S,)

    def plan(self, request: Request, scheduler) -> Forecast:
        f = super().plan(request, scheduler)
        log_score = math.log(max(request.priority, 1.0))  # a score below 1 token-second counts as 1
        if self._log_score is None:
            self._log_score = log_score
        self._log_score += (log_score - self._log_score) / SCORE_EMA_PLANS
        self._predicted_end[request] = f.context + f.pre_api_tokens
        return f

    # ---- admission --------------------------------------------------------------------------
    def on_iteration(self, scheduler) -> None:
        super().on_iteration(scheduler)
        self._reserved_pages = None
        if "reconsider" in self.switches and scheduler.waiting:
            self._reconsider_paused(scheduler)

    def admits(self, scheduler, request: Request, num_new: int) -> bool:
        if "reserve" not in self.switches or not scheduler.running:
            return True
        if self._reserved_pages is None:
            self._reserved_pages = sum(self._growth(scheduler, r) for r in scheduler.running)
        need = self._growth(scheduler, request)
        if scheduler.page_pool.num_free - self._reserved_pages < need:
            return False
        self._reserved_pages += need
        return True

    def _growth(self, scheduler, request: Request) -> int:
        """Pages the request needs for its next ``RESERVE_HORIZON_TOKENS`` tokens, up to its predicted length at
        its next call."""
        end = max(self._predicted_end.get(request, request.num_tokens), request.num_tokens)
        end = min(end, request.num_tokens + RESERVE_HORIZON_TOKENS)
        return max(0, scheduler.pages_for(end) - len(request.page_ids))

    # ---- paused requests --------------------------------------------------------------------
    def _reconsider_paused(self, scheduler) -> None:
        now = scheduler.clock.now()
        running = sum(r.num_tokens for r in scheduler.running)
        for request in list(scheduler.paused.values()):
            if request.strategy is not KVStrategy.PRESERVE or not request.page_ids or request.api_call is None:
                continue
            remaining = self._remaining(request.api_call, now - request.events[-1][1])
            if remaining <= 0:  # returning now (an oracle duration already passed)
                continue
            tokens = len(request.page_ids) * scheduler.page_size
            best = cheapest_strategy(
                context=tokens,
                api_time=remaining,
                other_context=running,
                batch_context=running + tokens,
                cost=self.cost,
                allow_swap=scheduler.host_pool is not None,
                running_tokens=len(scheduler.running),
            )
            if best is KVStrategy.DISCARD:
                scheduler.discard_paused(request)
            elif best is KVStrategy.SWAP:
                scheduler.swap_paused(request)

    def _remaining(self, call, elapsed: float) -> float:
        """A call's remaining time given the time it has run: the oracle's, else the residual life of the type's
        observed durations, and at least ``elapsed`` once the call has run past its type's mean (a call that
        overruns every precedent is as likely to run on as long again as to end now: Lindy's estimate for
        heavy-tailed durations, where the residual-life mean would say it ends at once)."""
        remaining = self.remaining_api_time(call, elapsed)
        if self.config.api_time_source == "oracle" and call.duration is not None:
            return remaining
        return max(remaining, elapsed) if elapsed > self.api_times.predict(call.name) else remaining

"""AugServe: LAMPS-style ranking from predicted features, re-scored with what a call returned; an adaptive token budget.

Follows Wang et al., "AugServe: Adaptive Request Scheduling for Augmented Large Language Model Inference Serving"
(arXiv 2512.04013). Its code was not found here; this follows the paper's abstract and published summaries.
Stage I, at arrival: from predicted output length and API duration, pick each call's context handling by
INFERCEPT's least waste and score the request by its predicted system cost over its phases. Stage II: refine the
score with runtime information, such as the length a call actually returned, with an anti-starvation guard. The
batch token limit adapts to the free GPU memory and the memory of paused requests, within bounds.

Here: stage I is ``LampsPolicy.plan`` (the memory-time area under the cheapest strategy) with the tokens a call
returns predicted as the mean returned by earlier calls of its type (0 before any returned), not read off the
script; stage II re-plans at every return from the request's real context (the result appended) and learns the
returned length. Starvation and victims are LAMPS's. The token budget of an iteration is
B_t = clamp(B·(1 - P_run / P), B·floor, B): it shrinks as running requests (P_run of the P usable pages) fill the
KV memory and grows back as pages are free or held by paused requests, which give way first under pressure;
never below the running requests' count (each decode keeps its token) nor above B = ``max_num_batched_tokens``,
the size the runner compiles for; floor = ``SchedulerConfig.adaptive_budget_floor``.

Guesses (the paper's equations were not at hand):
- the budget rule's form: linear in the share of pages running requests hold, bounded by [floor·B, B]; memory
  held by paused requests counts as room (the other reading, that it should shrink the budget, is not taken);
- the stage I predictor of a call's returned length (per-type mean); lengths and durations use LAMPS's predictors
  (noisy oracle, per-type mean API time) instead of the paper's BERT model;
- stage II's anti-starvation is LAMPS's iteration-count promotion.
"""

from __future__ import annotations

import dataclasses

from lamps_jax.config import SchedulerConfig
from lamps_jax.request import ApiCall, KVStrategy, Request
from lamps_jax.scheduler.cost_model import CostModel
from lamps_jax.scheduler.policies.forecast import Forecast, forecast
from lamps_jax.scheduler.policies.lamps import LampsPolicy


class AugServePolicy(LampsPolicy):
    name = "augserve"

    def __init__(self, config: SchedulerConfig, cost: CostModel) -> None:
        super().__init__(config, cost)
        self.returned: dict[str, tuple[int, int]] = {}  # API type -> (calls returned, tokens they returned)
        self.in_flight: dict[str, tuple[str, int]] = {}  # req_id -> (API type, context at the call)

    def returned_tokens(self, api_type: str) -> int:
        calls, tokens = self.returned.get(api_type, (0, 0))
        return round(tokens / calls) if calls else 0

    def forecast_next(self, request: Request) -> Forecast:
        """Stage I: LAMPS's forecast with every call's returned tokens predicted instead of read off the script."""
        f = forecast(request, self.lengths, self.api_time)
        if f.api_type is None:
            return f
        later = request.segments[request.segment_index + 1 :]
        decoded = sum(s.num_tokens for s in later)
        post = self.lengths.predict(decoded, f"{request.req_id}:{request.segment_index}:post") if decoded else 0
        returned = sum(self.returned_tokens(s.api_call.name) for s in later if s.api_call is not None)
        return dataclasses.replace(f, returned_tokens=self.returned_tokens(f.api_type), post_api_tokens=post + returned)

    def strategy_for_call(self, request: Request, call: ApiCall, scheduler) -> KVStrategy:
        if request.req_id in scheduler.requests:  # not a session's parked stand-in
            self.in_flight[request.req_id] = (call.name, request.num_tokens)
        return super().strategy_for_call(request, call, scheduler)

    def on_resume(self, scheduler, request: Request) -> None:
        """Stage II: learn the returned length, then score again from the real context."""
        in_flight = self.in_flight.pop(request.req_id, None)
        if in_flight is not None:
            api_type, context = in_flight
            calls, tokens = self.returned.get(api_type, (0, 0))
            self.returned[api_type] = (calls + 1, tokens + request.num_tokens - context)
        super().on_resume(scheduler, request)

    def token_budget(self, scheduler) -> int:
        ceiling = self.config.max_num_batched_tokens
        pool = scheduler.page_pool
        running_pages = sum(len(r.page_ids) for r in scheduler.running)
        adaptive = round(ceiling * (1 - running_pages / pool.num_usable))
        floor = max(1, round(ceiling * self.config.adaptive_budget_floor), len(scheduler.running))
        return min(ceiling, max(floor, adaptive))

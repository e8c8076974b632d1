"""Shortest predicted remaining output first, with vLLM's handling of calls (discard, re-queue)."""

from __future__ import annotations

import bisect

from lamps_jax.config import SchedulerConfig
from lamps_jax.request import ApiCall, KVStrategy, Request
from lamps_jax.scheduler.cost_model import CostModel
from lamps_jax.scheduler.policies.base import Policy
from lamps_jax.scheduler.policies.forecast import forecast
from lamps_jax.scheduler.predictors import ApiTimePredictor, NoisyOraclePredictor


class SjfPolicy(Policy):
    name = "sjf"

    def __init__(self, config: SchedulerConfig, cost: CostModel) -> None:
        super().__init__(config, cost)
        self.lengths = NoisyOraclePredictor(config.length_noise, config.predictor_seed)
        self.api_times = ApiTimePredictor()

    def enqueue(self, scheduler, request: Request, reason: str) -> None:
        if reason == "preempted":
            scheduler.waiting.insert(0, request)
            return
        f = forecast(request, self.lengths, self.api_times)
        request.priority = f.pre_api_tokens + f.post_api_tokens
        bisect.insort(scheduler.waiting, request, key=lambda r: r.priority)

    def strategy_for_call(self, request: Request, call: ApiCall, scheduler) -> KVStrategy:
        return KVStrategy.DISCARD

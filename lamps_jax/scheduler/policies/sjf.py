"""Shortest predicted remaining output first, with vLLM's handling of calls (discard, re-queue)."""

from __future__ import annotations

from lamps_jax.config import SchedulerConfig
from lamps_jax.request import ApiCall, KVStrategy, Request
from lamps_jax.scheduler.cost_model import CostModel
from lamps_jax.scheduler.policies.base import Policy
from lamps_jax.scheduler.policies.forecast import forecast
from lamps_jax.scheduler.predictors import NoisyOraclePredictor


class SjfPolicy(Policy):
    name = "sjf"

    def __init__(self, config: SchedulerConfig, cost: CostModel) -> None:
        super().__init__(config, cost)
        self.lengths = NoisyOraclePredictor(config.length_noise, config.predictor_seed)

    def waiting_key(self, request: Request) -> tuple:
        return (request.priority,)

    def enqueue(self, scheduler, request: Request, reason: str) -> None:
        if reason != "preempted":
            f = forecast(request, self.lengths, self.api_time)
            request.priority = f.pre_api_tokens + f.post_api_tokens
        super().enqueue(scheduler, request, reason)

    def strategy_for_call(self, request: Request, call: ApiCall, scheduler) -> KVStrategy:
        return KVStrategy.DISCARD

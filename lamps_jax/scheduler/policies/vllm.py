"""vLLM's handling of augmented requests: every API call discards; a returned request re-enters at the back."""

from __future__ import annotations

from lamps_jax.request import ApiCall, KVStrategy, Request
from lamps_jax.scheduler.policies.base import Policy


class VllmPolicy(Policy):
    name = "vllm"

    def enqueue(self, scheduler, request: Request, reason: str) -> None:
        if reason == "preempted":
            scheduler.waiting.insert(0, request)
        else:
            scheduler.waiting.append(request)

    def strategy_for_call(self, request: Request, call: ApiCall, scheduler) -> KVStrategy:
        return KVStrategy.DISCARD

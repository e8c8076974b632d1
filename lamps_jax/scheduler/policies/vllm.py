"""vLLM 0.2's handling of augmented requests, as the reference systems ran it: every API call discards, a
returned request re-enters the waiting queue at the back (InferCept ``vllm/core/scheduler.py:364-387``), and
admission reserves a request's whole prompt in prompt-only iterations (``Scheduler._schedule``, lines 417-649)."""

from __future__ import annotations

from lamps_jax.request import ApiCall, KVStrategy, Request
from lamps_jax.scheduler.policies.base import Policy


class VllmPolicy(Policy):
    name = "vllm"
    anchor_admission = "whole"

    def waiting_key(self, request: Request) -> tuple:
        return ()  # queue order: arrivals and returns at the back

    def strategy_for_call(self, request: Request, call: ApiCall, scheduler) -> KVStrategy:
        return KVStrategy.DISCARD

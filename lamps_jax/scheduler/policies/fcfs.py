"""First come, first served (vLLM's policy): admit by arrival, preempt the latest arrival."""

from __future__ import annotations

from collections.abc import Sequence

from lamps_jax.request import Request


class FcfsPolicy:
    name = "fcfs"

    def next_waiting(self, waiting: Sequence[Request]) -> Request:
        return waiting[0]

    def choose_victim(self, candidates: Sequence[Request]) -> Request:
        return max(candidates, key=lambda r: r.arrival_time)

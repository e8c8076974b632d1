"""What a scheduling policy decides: the order of the waiting queue and the preemption victim."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from lamps_jax.request import Request


class Policy(Protocol):
    name: str

    def next_waiting(self, waiting: Sequence[Request]) -> Request:
        """The waiting request to admit next (``waiting`` is non-empty, in arrival order)."""
        ...

    def choose_victim(self, candidates: Sequence[Request]) -> Request:
        """The running request to preempt when pages run out (``candidates`` is non-empty)."""
        ...

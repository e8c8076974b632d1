"""The data passed between scheduler, runner and engine in one iteration."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lamps_jax.request import Request


@dataclass(frozen=True)
class ScheduledChunk:
    request: Request  # the runner reads tokens, pages and sampling params from it
    num_new_tokens: int  # tokens computed this step: a prefill/recompute chunk, or 1 for a decode
    num_computed_tokens: int  # tokens already in the cache; the chunk starts at this position
    samples: bool  # the chunk reaches the last known token, so the step yields the next one

    @classmethod
    def of(cls, request: Request, num_new_tokens: int) -> ScheduledChunk:
        computed = request.num_computed_tokens
        return cls(request, num_new_tokens, computed, computed + num_new_tokens == request.num_tokens)

    @property
    def req_id(self) -> str:
        return self.request.req_id


@dataclass(frozen=True)
class SwapCopy:
    """One request's pages moving between the device and the host page store (either way)."""

    req_id: str
    page_ids: list[int]  # device pages: copied out of (swap-out) or filled (swap-in)
    host_page_ids: list[int]  # host store pages, one per device page

    @property
    def num_pages(self) -> int:
        return len(self.page_ids)


@dataclass(frozen=True)
class SchedulerOutput:
    scheduled: list[ScheduledChunk]  # what runs this step, in scheduling order
    preempted_ids: list[str] = field(default_factory=list)  # sent back: to waiting (recompute) or swapped out whole
    swap_out: list[SwapCopy] = field(default_factory=list)  # copied to the host before this step runs
    swap_in: list[SwapCopy] = field(default_factory=list)  # copied back before this step runs

    @property
    def total_tokens(self) -> int:
        return sum(c.num_new_tokens for c in self.scheduled)

    @property
    def is_empty(self) -> bool:
        return not (self.scheduled or self.swap_out or self.swap_in)


@dataclass(frozen=True)
class RunnerOutput:
    req_ids: list[str]  # requests that sampled a token this step
    sampled_token_ids: list[int]  # one per entry of req_ids (one host transfer per step)
    elapsed: float  # seconds the step took on the runner
    # req_id -> final-norm hidden state [D] (a numpy array) of the row that sampled its token, for requests that
    # ask (``Request.return_hidden_states``); it came back in the same host transfer as the tokens
    hidden_states: dict[str, Any] = field(default_factory=dict)

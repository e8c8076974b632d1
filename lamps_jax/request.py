"""Requests: sampling parameters, lifecycle status, the per-request timeline and the outputs.

``Request`` is the only mutable request state; the scheduler advances ``num_computed_tokens`` and
owns ``page_ids``, the engine appends sampled tokens. Every status change is recorded as an event
with the clock's time, which is what latency metrics read.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = no limit
    top_p: float = 1.0
    seed: int | None = None  # None = drawn from the engine's seed
    stop: tuple[str, ...] = ()  # stop strings; the output text ends before the first match
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED_STOPPED = "finished_stopped"  # eos, stop token or stop string
    FINISHED_LENGTH = "finished_length"  # max_tokens or the model's context
    FINISHED_ABORTED = "finished_aborted"
    FINISHED_ERROR = "finished_error"

    @property
    def is_finished(self) -> bool:
        return self.name.startswith("FINISHED")


@dataclass
class Request:
    req_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    arrival_time: float
    seed: int  # the sampling seed actually used
    eos_token_ids: tuple[int, ...] = ()
    prompt: str | None = None
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0  # tokens whose K/V are in the cache
    page_ids: list[int] = field(default_factory=list)
    status: RequestStatus = RequestStatus.WAITING
    events: list[tuple[RequestStatus, float]] = field(default_factory=list)
    first_token_time: float | None = None
    stop_reason: str | int | None = None  # the stop string or token that ended it
    error: str | None = None

    def __post_init__(self) -> None:
        self.events.append((self.status, self.arrival_time))

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def is_finished(self) -> bool:
        return self.status.is_finished

    def tokens(self, start: int, end: int) -> list[int]:
        prompt_len = len(self.prompt_token_ids)
        if end <= prompt_len:
            return self.prompt_token_ids[start:end]
        return (self.prompt_token_ids + self.output_token_ids)[start:end]

    def set_status(self, status: RequestStatus, now: float) -> None:
        self.status = status
        self.events.append((status, now))


@dataclass(frozen=True)
class RequestOutput:
    req_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    text: str
    token_ids: list[int]
    finished: bool
    finish_reason: str | None  # "stop", "length", "abort", "error" or None while running
    stop_reason: str | int | None = None
    error: str | None = None
    time_to_first_token: float | None = None  # seconds from arrival
    latency: float | None = None  # seconds from arrival to finish

"""Requests: sampling parameters, API-call segments, lifecycle status, timeline and outputs.

``Request`` is the only mutable request state; the scheduler advances ``num_computed_tokens`` and
owns ``page_ids``, sampled tokens and API results are appended to ``output_token_ids`` (everything
after the prompt). An augmented request pauses for API calls: WAITING -> RUNNING -> PAUSED_API ->
{RUNNING (preserved) | SWAPPED -> RUNNING | WAITING (discarded, recomputed)} -> ... -> FINISHED_*.
Every status change is recorded as an event with the clock's time, which is what metrics read.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lamps_jax.api.tool_use import ToolUse


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
        if not 0 <= self.top_k < 2**31:
            raise ValueError(f"top_k must be in [0, 2**31), got {self.top_k}")
        if self.seed is not None and not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {self.seed}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")


class KVStrategy(enum.Enum):
    """What happens to a paused request's KV pages while its API call runs."""

    PRESERVE = "preserve"  # pages stay on the device
    DISCARD = "discard"  # pages are freed; the context is recomputed on return
    SWAP = "swap"  # pages are copied to host memory and back


@dataclass(frozen=True)
class ApiCall:
    """One API call. Simulated calls carry their duration and answer; tool calls name a tool."""

    name: str  # API type or registered tool name
    arguments: dict | str = ""  # what a detected tool call passed
    duration: float | None = None  # simulated: seconds the call takes
    result_token_ids: tuple[int, ...] = ()  # simulated: the tokens it returns
    fails: bool = False  # simulated: the call fails instead of answering

    @property
    def is_simulated(self) -> bool:
        return self.duration is not None


@dataclass(frozen=True)
class Segment:
    """Scripted generation: decode ``num_tokens``, then make ``api_call`` (None ends the request)."""

    num_tokens: int
    api_call: ApiCall | None = None
    token_ids: tuple[int, ...] | None = None  # prescribed output tokens (trace replay); None = the model's

    def __post_init__(self) -> None:
        if self.num_tokens < 1:
            raise ValueError(f"a segment decodes at least one token, got {self.num_tokens}")
        if self.token_ids is not None and len(self.token_ids) != self.num_tokens:
            raise ValueError(f"segment prescribes {len(self.token_ids)} tokens but decodes {self.num_tokens}")

    @property
    def result_token_ids(self) -> tuple[int, ...]:
        """The tokens the segment's (simulated) call appends."""
        return self.api_call.result_token_ids if self.api_call is not None else ()


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PAUSED_API = "paused_api"  # an API call is running; pages per the request's strategy
    SWAPPED = "swapped"  # the call returned; pages are on the host, waiting to be swapped in
    FINISHED_STOPPED = "finished_stopped"  # eos, stop token or stop string
    FINISHED_LENGTH = "finished_length"  # max_tokens or the model's context
    FINISHED_ABORTED = "finished_aborted"
    FINISHED_ERROR = "finished_error"

    @property
    def is_finished(self) -> bool:
        return self in FINISHED_STATUSES


FINISHED_STATUSES = frozenset(s for s in RequestStatus if s.name.startswith("FINISHED"))


@dataclass(eq=False)  # an entity: queues find and remove a request by identity, not by comparing fields
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
    page_hashes: list[int] = field(default_factory=list)  # prefix caching: chained hashes of its full pages
    num_registered_pages: int = 0  # leading pages in the prefix cache (taken from it or registered)
    host_page_ids: list[int] = field(default_factory=list)  # host pool pages while swapped out
    status: RequestStatus = RequestStatus.WAITING
    events: list[tuple[RequestStatus, float]] = field(default_factory=list)
    first_token_time: float | None = None
    stop_reason: str | int | None = None  # the stop string or token that ended it
    error: str | None = None
    segments: tuple[Segment, ...] = ()  # scripted API calls; empty for plain requests
    num_generated_tokens: int = 0  # tokens the model sampled (output_token_ids minus API results)
    segment_index: int = 0
    segment_start: int = 0  # num_generated_tokens when the current segment began
    strategy: KVStrategy | None = None  # set while paused (PAUSED_API)
    api_call: ApiCall | None = None  # the call in flight
    num_api_calls: int = 0
    api_call_records: list[ApiCallRecord] = field(default_factory=list)  # calls that returned
    result_end: int = 0  # len(output_token_ids) after the last API result (tool-call detection scans from here)
    priority: float = 0.0  # the policy's waiting-queue key, smaller first (LAMPS score, SJF length)
    planned_strategy: KVStrategy | None = None  # a strategy a policy fixed ahead of the call (LAMPS)
    session_id: str | None = None  # a turn of this session: its KV is parked when it ends, for the next turn
    tool_use: ToolUse | None = None  # the request's own tool calling (a server's tools): detection and results
    return_hidden_states: bool = False  # the runner returns the final-norm hidden state of its sampling rows
    hidden_state: Any = None  # the latest one it returned (a numpy array [D]); None before the first
    # the hidden state each segment starts from (length prediction): the prompt's last token, then the last
    # token the runner returned before each API call
    segment_hidden_states: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.events.append((self.status, self.arrival_time))

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def segment(self) -> Segment | None:
        return self.segments[self.segment_index] if self.segment_index < len(self.segments) else None

    def choose_token(self, sampled: int) -> int:
        """The token to append: the segment's prescribed one (trace replay) or the sampled one."""
        segment = self.segment
        if segment is None or segment.token_ids is None:
            return sampled
        return segment.token_ids[self.num_generated_tokens - self.segment_start]

    def append_generated(self, token: int) -> None:
        self.output_token_ids.append(token)
        self.num_generated_tokens += 1

    def scripted_call(self) -> ApiCall | None:
        """The segment's API call once its tokens are decoded; advances to the next segment."""
        segment = self.segment
        if segment is None or self.num_generated_tokens - self.segment_start < segment.num_tokens:
            return None
        self.segment_index += 1
        self.segment_start = self.num_generated_tokens
        return segment.api_call

    @property
    def script_done(self) -> bool:
        """A scripted request whose last segment is decoded ends there."""
        return bool(self.segments) and self.segment is None

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    def tokens(self, start: int, end: int) -> list[int]:
        prompt_len = len(self.prompt_token_ids)
        if end <= prompt_len:
            return self.prompt_token_ids[start:end]
        return (self.prompt_token_ids + self.output_token_ids)[start:end]

    def set_status(self, status: RequestStatus, now: float) -> None:
        self.status = status
        self.events.append((status, now))


@dataclass(frozen=True)
class ApiCallRecord:
    """One API call a request made, as a program reads it (the text keeps what the model saw)."""

    name: str  # API type or tool name
    status: str  # ok | error (raised or failed) | timeout | unknown_tool
    error: str | None  # why, when status is not ok
    duration: float  # seconds from the pause to the result
    strategy: str  # what the request's KV did meanwhile: preserve, discard or swap
    arguments: dict | str = ""  # what the call passed (a detected tool call's arguments)
    result: str | None = None  # the answer as text, before any formatting (None: it answered token ids)


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
    num_api_calls: int = 0
    num_generated_tokens: int = 0  # token_ids minus API results
    timeline: tuple[tuple[str, float], ...] = ()  # (status, clock time) of every transition
    api_calls: tuple[ApiCallRecord, ...] = ()  # every call that returned, in order
    result_spans: tuple[tuple[int, int], ...] = ()  # [start, end) of each API result's text within ``text``

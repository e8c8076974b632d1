"""Workload requests: what a trace loader or a generator hands the engine, the simulator and the benchmarks.

A ``WorkloadRequest`` is a prompt length plus the scripted ``Segment``s of ``lamps_jax.request``: decode
``num_tokens``, then make the segment's simulated ``ApiCall``, whose name is the API type, whose duration is
the seconds it takes and whose result is a filler token repeated once per returned token (only the counts
matter to the simulator and to a model with dummy weights). The last segment makes no call.
``arrival_time`` is set by ``lamps_jax.workload.arrivals``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from lamps_jax.request import ApiCall, Segment

# The six INFERCEPT augmentations, as call types (chat + TTS requests make "chat" and "tts" calls).
API_TYPES = ("math", "qa", "virtual_env", "chat", "tts", "image")
DEFAULT_FILLER_TOKEN_ID = 1


@dataclass(frozen=True)
class CallSpec:
    """One simulated call by its counts: type, seconds, tokens returned."""

    api_type: str
    duration: float
    num_result_tokens: int

    def __post_init__(self) -> None:
        if not math.isfinite(self.duration) or self.duration < 0:
            raise ValueError(f"an API call lasts a finite, non-negative time, got {self.duration}")
        if self.num_result_tokens < 0:
            raise ValueError(f"an API call returns >= 0 tokens, got {self.num_result_tokens}")

    def to_api_call(self, filler_token_id: int) -> ApiCall:
        result = (filler_token_id,) * self.num_result_tokens
        return ApiCall(name=self.api_type, duration=self.duration, result_token_ids=result)


@dataclass(frozen=True)
class WorkloadRequest:
    request_id: str
    api_types: tuple[str, ...]  # the type of each call, in order (equal to each call's ``ApiCall.name``)
    prompt_tokens: int  # prompt length in tokens
    segments: tuple[Segment, ...]  # every segment but the last makes a simulated call
    arrival_time: float = 0.0  # seconds from the start of the run

    def __post_init__(self) -> None:
        if not self.request_id:
            raise ValueError("a workload request needs a non-empty request_id")
        if self.prompt_tokens < 1:
            raise ValueError(f"request {self.request_id!r}: prompt_tokens must be >= 1, got {self.prompt_tokens}")
        if not self.segments:
            raise ValueError(f"request {self.request_id!r}: at least one segment is needed")
        if self.segments[-1].api_call is not None:
            raise ValueError(f"request {self.request_id!r}: the last segment must not make an API call")
        calls = [segment.api_call for segment in self.segments[:-1]]
        if any(call is None or not call.is_simulated for call in calls):
            raise ValueError(f"request {self.request_id!r}: every segment but the last makes a simulated call")
        if tuple(call.name for call in calls if call is not None) != self.api_types:
            raise ValueError(f"request {self.request_id!r}: api_types {self.api_types} differ from the calls' names")
        if not math.isfinite(self.arrival_time) or self.arrival_time < 0:
            raise ValueError(f"request {self.request_id!r}: arrival_time must be finite and >= 0")

    @property
    def num_output_tokens(self) -> int:
        """Tokens the model decodes, all segments together (API results excluded)."""
        return sum(segment.num_tokens for segment in self.segments)

    @property
    def num_api_calls(self) -> int:
        return len(self.api_types)

    @property
    def total_api_time(self) -> float:
        """Seconds spent in API calls, all calls together."""
        return sum(segment.api_call.duration or 0.0 for segment in self.segments if segment.api_call is not None)

    def with_arrival(self, arrival_time: float) -> WorkloadRequest:
        return replace(self, arrival_time=arrival_time)


def build_request(
    request_id: str,
    prompt_tokens: int,
    decode_tokens: Sequence[int],
    calls: Sequence[CallSpec],
    filler_token_id: int = DEFAULT_FILLER_TOKEN_ID,
) -> WorkloadRequest:
    """Segment i decodes ``decode_tokens[i]`` then makes ``calls[i]``; the one extra decode count ends the request."""
    if len(decode_tokens) != len(calls) + 1:
        raise ValueError(f"request {request_id!r}: {len(calls)} calls need {len(calls) + 1} decode counts")
    api_calls = [call.to_api_call(filler_token_id) for call in calls] + [None]
    segments = tuple(Segment(num_tokens, api_call=call) for num_tokens, call in zip(decode_tokens, api_calls))
    return WorkloadRequest(request_id, tuple(call.api_type for call in calls), prompt_tokens, segments)

"""A seeded synthetic workload shaped like the INFERCEPT 6-augmentation traces (trace README, "Shape of the data").

A request type repeats a round of calls (chat + TTS: a TTS call, then the human's reply), each call after a
decode, and ends with a final decode. API times follow the README's per-type table; rounds per request are the
table's calls over the trace's requests of that type; prompt, decode and returned-token counts follow per-type
means and sds measured once from ``load_trace(DEFAULT_TRACES["multi"])`` (4 chars per token) and written below.
A ``no_api_share`` of requests makes no call and decodes the same number of tokens in one segment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from lamps_jax.workload.spec import DEFAULT_FILLER_TOKEN_ID, CallSpec, WorkloadRequest, build_request


@dataclass(frozen=True)
class Counts:
    """A token count: gamma-distributed with this mean and sd (constant when sd is 0), rounded."""

    mean: float
    sd: float

    def __post_init__(self) -> None:
        if self.mean <= 0 or self.sd < 0:
            raise ValueError(f"a count needs mean > 0 and sd >= 0, got {self.mean}, {self.sd}")

    def sample(self, rng: np.random.Generator, minimum: int) -> int:
        if self.sd == 0:
            return max(minimum, round(self.mean))
        shape = (self.mean / self.sd) ** 2
        return max(minimum, round(rng.gamma(shape, self.mean / shape)))


@dataclass(frozen=True)
class ApiTime:
    """A call type's seconds: a normal clipped to [low, high] (as the trace caps chat replies at 60 s),
    with location and scale solved so that the clipped mean and sd are ``mean`` and ``sd``."""

    mean: float
    sd: float
    low: float
    high: float

    def __post_init__(self) -> None:
        if not 0 <= self.low <= self.mean <= self.high or self.sd < 0:
            raise ValueError(f"API time needs 0 <= low <= mean <= high and sd >= 0, got {self}")

    @cached_property
    def loc_scale(self) -> tuple[float, float]:
        """The unclipped normal's (location, scale), by fixed-point iteration on the clipped moments."""
        loc, scale = self.mean, self.sd
        for _ in range(200):
            if scale == 0:
                break
            mean, sd = _clipped_normal_moments(loc, scale, self.low, self.high)
            if abs(mean - self.mean) < 1e-9 * self.sd and abs(sd - self.sd) < 1e-9 * self.sd:
                break
            loc, scale = loc + self.mean - mean, scale * self.sd / sd
        return loc, scale

    def sample(self, rng: np.random.Generator) -> float:
        loc, scale = self.loc_scale
        return min(max(float(rng.normal(loc, scale)), self.low), self.high)


def _clipped_normal_moments(loc: float, scale: float, low: float, high: float) -> tuple[float, float]:
    """Mean and sd of clip(X, low, high) for X ~ Normal(loc, scale)."""
    a, b = (low - loc) / scale, (high - loc) / scale
    cdf_a, cdf_b = (0.5 * (1 + math.erf(z / math.sqrt(2))) for z in (a, b))
    pdf_a, pdf_b = (math.exp(-z * z / 2) / math.sqrt(2 * math.pi) for z in (a, b))
    inside = cdf_b - cdf_a
    first = low * cdf_a + high * (1 - cdf_b) + loc * inside + scale * (pdf_a - pdf_b)
    second = (
        low**2 * cdf_a
        + high**2 * (1 - cdf_b)
        + (loc**2 + scale**2) * inside
        + 2 * loc * scale * (pdf_a - pdf_b)
        + scale**2 * (a * pdf_a - b * pdf_b)
    )
    return first, math.sqrt(max(second - first**2, 0.0))


@dataclass(frozen=True)
class CallType:
    seconds: ApiTime
    returned: Counts  # tokens the call appends


@dataclass(frozen=True)
class RequestType:
    prompt: Counts
    round_calls: tuple[tuple[str, Counts], ...]  # per round: (call type, tokens decoded before that call)
    mean_rounds: float
    min_rounds: int
    max_rounds: int
    final: Counts  # tokens decoded after the last call

    def __post_init__(self) -> None:
        if not 1 <= self.min_rounds <= self.mean_rounds <= self.max_rounds:
            raise ValueError(f"rounds need 1 <= min <= mean <= max, got {self}")

    def sample_rounds(self, rng: np.random.Generator) -> int:
        """min_rounds plus a binomial share of the spread, so that the mean is ``mean_rounds``."""
        spread = self.max_rounds - self.min_rounds
        if spread == 0:
            return self.min_rounds
        return self.min_rounds + int(rng.binomial(spread, (self.mean_rounds - self.min_rounds) / spread))


# Trace README table: mean, sd and range of seconds; returned tokens measured (README: ~21, ~57, ~10, ~42, ~8, ~8).
CALL_TYPES = {
    "math": CallType(ApiTime(8.3e-5, 4.8e-5, 0.0, 6e-4), Counts(21.0, 5.0)),
    "qa": CallType(ApiTime(0.71, 0.20, 0.0, 1.03), Counts(56.8, 8.5)),
    "virtual_env": CallType(ApiTime(0.085, 0.015, 0.052, 0.111), Counts(10.2, 10.7)),
    "chat": CallType(ApiTime(28.2, 18.4, 3.1, 60.0), Counts(42.5, 109.8)),
    "tts": CallType(ApiTime(6.1, 2.7, 0.08, 13.0), Counts(8.0, 0.0)),
    "image": CallType(ApiTime(11.5, 0.93, 9.2, 13.6), Counts(8.0, 0.0)),
}

# Rounds: README calls / trace requests of the type (math 99, QA 49, virtual env 54, each chat type 65; the 675
# chat calls split evenly over the three chat types). A chat reply is cut at 256 chars (~61 tokens); the chat +
# TTS / image requests acknowledge the call in 7 tokens and end on the human's reply (then decode 1 token).
_CHAT_PROMPT = Counts(117.4, 291.1)
_CHAT_REPLY = Counts(61.1, 10.6)
_ACK = Counts(7.0, 0.0)
_LAST = Counts(1.0, 0.0)
REQUEST_TYPES = {
    "math": RequestType(Counts(410.8, 55.6), (("math", Counts(130.4, 90.8)),), 276 / 99, 1, 4, Counts(113.0, 224.8)),
    "qa": RequestType(Counts(933.6, 6.9), (("qa", Counts(188.0, 119.8)),), 151 / 49, 1, 4, Counts(162.3, 177.8)),
    "virtual_env": RequestType(Counts(1973.0, 0.0), (("virtual_env", Counts(4.0, 0.0)),), 289 / 54, 4, 8, _LAST),
    "chat": RequestType(_CHAT_PROMPT, (("chat", _CHAT_REPLY),), 675 / 3 / 65, 1, 8, Counts(317.2, 245.8)),
    "chat_tts": RequestType(_CHAT_PROMPT, (("tts", _CHAT_REPLY), ("chat", _ACK)), 225 / 65, 1, 8, _LAST),
    "chat_image": RequestType(_CHAT_PROMPT, (("image", _CHAT_REPLY), ("chat", _ACK)), 225 / 65, 1, 8, _LAST),
}
REQUEST_MIX = {"math": 0.25, "qa": 0.13, "virtual_env": 0.14, "chat": 0.16, "chat_tts": 0.16, "chat_image": 0.16}


def generate(
    num_requests: int,
    seed: int = 0,
    no_api_share: float = 0.0,
    mix: Mapping[str, float] | None = None,
    filler_token_id: int = DEFAULT_FILLER_TOKEN_ID,
) -> list[WorkloadRequest]:
    """``num_requests`` requests ("<type>-<i>"), types drawn by ``mix`` (default ``REQUEST_MIX``; any weights)."""
    if num_requests < 0:
        raise ValueError(f"num_requests must be >= 0, got {num_requests}")
    if not 0 <= no_api_share <= 1:
        raise ValueError(f"no_api_share must be in [0, 1], got {no_api_share}")
    names, probs = _mix_probabilities(REQUEST_MIX if mix is None else mix)
    rng = np.random.default_rng(seed)
    type_indices = rng.choice(len(names), size=num_requests, p=probs)
    plain = rng.random(num_requests) < no_api_share
    return [
        _sample_request(f"{names[t]}-{i}", REQUEST_TYPES[names[t]], rng, bool(plain[i]), filler_token_id)
        for i, t in enumerate(type_indices)
    ]


def _mix_probabilities(mix: Mapping[str, float]) -> tuple[list[str], np.ndarray]:
    unknown = set(mix) - set(REQUEST_TYPES)
    if unknown:
        raise ValueError(f"unknown request types {sorted(unknown)}; known: {sorted(REQUEST_TYPES)}")
    weights = np.array([float(w) for w in mix.values()])
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"mix weights must be finite, >= 0 and not all 0, got {dict(mix)}")
    return list(mix), weights / weights.sum()


def _sample_request(
    request_id: str, kind: RequestType, rng: np.random.Generator, plain: bool, filler_token_id: int
) -> WorkloadRequest:
    prompt_tokens = kind.prompt.sample(rng, minimum=1)
    decode_tokens, calls = [], []
    for _ in range(kind.sample_rounds(rng)):
        for api_type, before in kind.round_calls:
            call_type = CALL_TYPES[api_type]
            decode_tokens.append(before.sample(rng, minimum=1))
            calls.append(CallSpec(api_type, call_type.seconds.sample(rng), call_type.returned.sample(rng, minimum=0)))
    decode_tokens.append(kind.final.sample(rng, minimum=1))
    if plain:
        return build_request(request_id, prompt_tokens, [sum(decode_tokens)], [], filler_token_id)
    return build_request(request_id, prompt_tokens, decode_tokens, calls, filler_token_id)

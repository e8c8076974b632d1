"""What the predictive policies believe about a request's future, from its script and the predictors.

For the current segment: tokens left to decode before its API call (predicted), the call's type,
its duration as the policy believes it (``Policy.api_time``) and the tokens it returns; then the tokens
of all later segments. A plain request (no script) has one segment: ``max_tokens`` minus what it
generated, and no call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lamps_jax.request import ApiCall, Request
from lamps_jax.scheduler.predictors import LengthPredictor


@dataclass(frozen=True)
class Forecast:
    context: int  # tokens the request holds (prompt + everything appended so far)
    pre_api_tokens: int  # predicted tokens decoded before the next call (or to the end)
    api_type: str | None  # None: no call ahead
    api_time: float  # predicted seconds of that call
    returned_tokens: int  # tokens the call appends
    post_api_tokens: int  # predicted tokens decoded after the call, all later segments together


def forecast(request: Request, lengths: LengthPredictor, api_time: Callable[[ApiCall], float]) -> Forecast:
    key = f"{request.req_id}:{request.segment_index}"
    segment = request.segment
    if segment is None:
        left = max(1, request.sampling_params.max_tokens - request.num_generated_tokens)
        return Forecast(request.num_tokens, lengths.predict(left, key), None, 0.0, 0, 0)
    left = max(1, segment.num_tokens - (request.num_generated_tokens - request.segment_start))
    later = request.segments[request.segment_index + 1 :]
    post = sum(s.num_tokens for s in later) + sum(len(s.result_token_ids) for s in later)
    call = segment.api_call
    return Forecast(
        context=request.num_tokens,
        pre_api_tokens=lengths.predict(left, key),
        api_type=None if call is None else call.name,
        api_time=0.0 if call is None else api_time(call),
        returned_tokens=len(segment.result_token_ids),
        post_api_tokens=lengths.predict(post, f"{key}:post") if post else 0,
    )

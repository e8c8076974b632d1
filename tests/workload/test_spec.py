"""WorkloadRequest: validation, the derived counts, and build_request's segments."""

from __future__ import annotations

import pytest

from lamps_jax.request import ApiCall, Segment
from lamps_jax.workload.spec import CallSpec, WorkloadRequest, build_request


def make_request(request_id: str = "r") -> WorkloadRequest:
    calls = [CallSpec("math", 0.5, 3), CallSpec("qa", 1.5, 0)]
    return build_request(request_id, prompt_tokens=10, decode_tokens=[4, 5, 6], calls=calls, filler_token_id=7)


def test_build_request_segments_and_counts() -> None:
    request = make_request()
    assert request.api_types == ("math", "qa")
    assert [s.num_tokens for s in request.segments] == [4, 5, 6]
    assert request.segments[0].api_call == ApiCall(name="math", duration=0.5, result_token_ids=(7, 7, 7))
    assert request.segments[1].result_token_ids == ()
    assert request.segments[2].api_call is None
    assert request.num_output_tokens == 15
    assert request.num_api_calls == 2
    assert request.total_api_time == pytest.approx(2.0)
    assert request.arrival_time == 0.0


def test_with_arrival_keeps_the_rest() -> None:
    request = make_request()
    moved = request.with_arrival(3.25)
    assert moved.arrival_time == 3.25
    assert moved.segments == request.segments and moved.request_id == request.request_id


def test_plain_request_has_no_calls() -> None:
    request = build_request("p", 3, [9], [])
    assert request.num_api_calls == 0 and request.total_api_time == 0.0 and request.num_output_tokens == 9


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"request_id": ""}, "non-empty request_id"),
        ({"prompt_tokens": 0}, "prompt_tokens"),
        ({"segments": ()}, "at least one segment"),
        ({"segments": (Segment(1, ApiCall("math", duration=0.1)),), "api_types": ("math",)}, "last segment"),
        ({"segments": (Segment(1, ApiCall("math")), Segment(1)), "api_types": ("math",)}, "simulated call"),
        ({"api_types": ("qa",)}, "api_types"),
        ({"arrival_time": -1.0}, "arrival_time"),
        ({"arrival_time": float("nan")}, "arrival_time"),
    ],
)
def test_invalid_requests_are_rejected(kwargs: dict, message: str) -> None:
    fields = {
        "request_id": "r",
        "api_types": ("math",),
        "prompt_tokens": 4,
        "segments": (Segment(2, ApiCall("math", duration=0.1)), Segment(3)),
    }
    with pytest.raises(ValueError, match=message):
        WorkloadRequest(**(fields | kwargs))


@pytest.mark.parametrize(("duration", "num_result_tokens"), [(-0.1, 1), (float("inf"), 1), (0.1, -1)])
def test_invalid_call_specs_are_rejected(duration: float, num_result_tokens: int) -> None:
    with pytest.raises(ValueError):
        CallSpec("math", duration, num_result_tokens)


def test_build_request_needs_one_more_decode_than_calls() -> None:
    with pytest.raises(ValueError, match="decode counts"):
        build_request("r", 4, [1, 2], [CallSpec("math", 0.0, 1), CallSpec("math", 0.0, 1)])

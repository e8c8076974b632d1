"""The synthetic generator: README shares and API times on a large seeded sample, determinism, options."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict

import numpy as np
import pytest

from lamps_jax.workload.spec import API_TYPES, WorkloadRequest
from lamps_jax.workload.synthetic import CALL_TYPES, REQUEST_MIX, REQUEST_TYPES, ApiTime, Counts, generate

NUM_REQUESTS = 20_000
README_MEAN_SECONDS = {"math": 8.3e-5, "qa": 0.71, "virtual_env": 0.085, "chat": 28.2, "tts": 6.1, "image": 11.5}
README_RANGE = {
    "math": (0, 6e-4), "qa": (0, 1.03), "virtual_env": (0.052, 0.111), "chat": (3.1, 60), "tts": (0.08, 13.0),
    "image": (9.2, 13.6),
}  # fmt: skip
README_RETURNED = {"math": 21, "qa": 57, "virtual_env": 10, "chat": 42, "tts": 8, "image": 8}
# README calls / trace requests of the type (chat: calls of its own type, one per round).
CALLS_PER_REQUEST = {
    "math": 276 / 99, "qa": 151 / 49, "virtual_env": 289 / 54, "chat": 225 / 65, "chat_tts": 450 / 65,
    "chat_image": 450 / 65,
}  # fmt: skip


def request_type(request: WorkloadRequest) -> str:
    return request.request_id.rsplit("-", 1)[0]


@pytest.fixture(scope="module")
def sample() -> list[WorkloadRequest]:
    return generate(NUM_REQUESTS, seed=0)


def test_request_shares_follow_the_mix(sample: list[WorkloadRequest]) -> None:
    counts = Counter(request_type(r) for r in sample)
    for name, share in REQUEST_MIX.items():
        assert abs(counts[name] / NUM_REQUESTS - share) < 0.015, name


def test_api_times_and_returned_tokens_follow_the_table(sample: list[WorkloadRequest]) -> None:
    seconds, returned = defaultdict(list), defaultdict(list)
    for request in sample:
        for segment in request.segments[:-1]:
            seconds[segment.api_call.name].append(segment.api_call.duration)
            returned[segment.api_call.name].append(len(segment.result_token_ids))
    assert set(seconds) == set(API_TYPES) == set(CALL_TYPES)
    for api_type, mean in README_MEAN_SECONDS.items():
        assert statistics.fmean(seconds[api_type]) == pytest.approx(mean, rel=0.05), api_type
        low, high = README_RANGE[api_type]
        assert low <= min(seconds[api_type]) and max(seconds[api_type]) <= high, api_type
        assert statistics.fmean(returned[api_type]) == pytest.approx(README_RETURNED[api_type], rel=0.05, abs=1)


def test_calls_per_request_follow_the_table(sample: list[WorkloadRequest]) -> None:
    calls = defaultdict(list)
    for request in sample:
        calls[request_type(request)].append(request.num_api_calls)
    for name, mean in CALLS_PER_REQUEST.items():
        assert statistics.fmean(calls[name]) == pytest.approx(mean, rel=0.05), name
    assert max(calls["chat_tts"]) <= 16 and min(calls["virtual_env"]) >= 4


def test_chat_types_alternate_calls(sample: list[WorkloadRequest]) -> None:
    tts = next(r for r in sample if request_type(r) == "chat_tts" and r.num_api_calls >= 4)
    assert tts.api_types[:4] == ("tts", "chat", "tts", "chat")


def test_seeded_and_deterministic() -> None:
    assert generate(200, seed=3, no_api_share=0.2) == generate(200, seed=3, no_api_share=0.2)
    assert generate(200, seed=3) != generate(200, seed=4)


def test_no_api_share_makes_plain_requests() -> None:
    requests = generate(2000, seed=1, no_api_share=0.3)
    plain = [r for r in requests if r.num_api_calls == 0]
    assert abs(len(plain) / len(requests) - 0.3) < 0.05
    assert all(len(r.segments) == 1 and r.num_output_tokens >= 1 for r in plain)
    assert all(r.num_api_calls == 0 for r in generate(50, seed=1, no_api_share=1.0))


def test_custom_mix() -> None:
    requests = generate(300, seed=2, mix={"qa": 1.0, "chat_image": 3.0})
    counts = Counter(request_type(r) for r in requests)
    assert set(counts) == {"qa", "chat_image"} and counts["chat_image"] > counts["qa"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_requests": -1},
        {"num_requests": 5, "no_api_share": 1.5},
        {"num_requests": 5, "mix": {"poetry": 1.0}},
        {"num_requests": 5, "mix": {"qa": 0.0}},
        {"num_requests": 5, "mix": {"qa": -1.0, "math": 2.0}},
    ],
)
def test_invalid_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        generate(**kwargs)


@pytest.mark.parametrize("api_type", sorted(CALL_TYPES))
def test_clipped_normal_matches_the_table_moments(api_type: str) -> None:
    seconds = CALL_TYPES[api_type].seconds
    rng = np.random.default_rng(0)
    draws = [seconds.sample(rng) for _ in range(20_000)]
    assert statistics.fmean(draws) == pytest.approx(seconds.mean, rel=0.02)
    assert statistics.pstdev(draws) == pytest.approx(seconds.sd, rel=0.03)


def test_distribution_validation() -> None:
    with pytest.raises(ValueError):
        ApiTime(mean=5.0, sd=1.0, low=6.0, high=9.0)
    with pytest.raises(ValueError):
        Counts(mean=0.0, sd=1.0)
    assert Counts(7.0, 0.0).sample(np.random.default_rng(0), minimum=1) == 7
    assert ApiTime(2.0, 0.0, 1.0, 3.0).sample(np.random.default_rng(0)) == 2.0
    assert set(REQUEST_TYPES) == set(REQUEST_MIX)

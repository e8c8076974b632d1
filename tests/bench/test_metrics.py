"""Goodput under an SLO and session completion time, on hand-built request outputs."""

from __future__ import annotations

import pytest

from lamps_jax.bench.metrics import (
    DEFAULT_SLO,
    DEFAULT_SLO_SCALE,
    SLO,
    goodput,
    session_completion,
    slo_from_cost,
    summarize,
    time_per_output_token,
    unloaded_prefill_time,
)
from lamps_jax.request import RequestOutput
from lamps_jax.scheduler.cost_model import PROFILES


def output(
    name: str, ttft: float | None, latency: float, tokens: int, api: float = 0.0, finish: str = "stop"
) -> RequestOutput:
    """A request that arrived at 0, ran, paused ``api`` seconds for one call at 0.2 s when ``api`` > 0, and ended
    at ``latency`` with ``tokens`` generated."""
    timeline = [("waiting", 0.0), ("running", 0.0)]
    if api:
        timeline += [("paused_api", 0.2), ("running", 0.2 + api)]
    timeline.append(("finished_stopped" if finish == "stop" else "finished_aborted", latency))
    return RequestOutput(
        req_id=name,
        prompt=None,
        prompt_token_ids=[1, 2, 3],
        text="",
        token_ids=[7] * tokens,
        finished=True,
        finish_reason=finish,
        time_to_first_token=ttft,
        latency=latency,
        num_api_calls=int(api > 0),
        num_generated_tokens=tokens,
        timeline=tuple(timeline),
    )


SLO_1S_100MS = SLO(ttft=1.0, tpot=0.1)

OUTPUTS = [
    output("meets", ttft=0.5, latency=1.0, tokens=11),  # TPOT 0.05
    output("late_first_token", ttft=1.5, latency=2.0, tokens=11),  # TPOT 0.05, TTFT misses
    output("slow_tokens", ttft=0.5, latency=2.5, tokens=11),  # TPOT 0.2 misses
    output("meets_api_excluded", ttft=0.5, latency=31.0, tokens=11, api=30.0),  # TPOT 0.05 without the 30 s call
    output("aborted", ttft=0.1, latency=0.5, tokens=5, finish="abort"),  # not finished: misses
    output("one_token", ttft=0.2, latency=0.2, tokens=1),  # no TPOT to miss
    output("on_both_deadlines", ttft=1.0, latency=2.0, tokens=11),  # TTFT 1.0, TPOT 0.1: deadlines are inclusive
    output("no_first_token", ttft=None, latency=0.3, tokens=0),  # finished, but never met a TTFT deadline
]
MEETING = {"meets", "meets_api_excluded", "one_token", "on_both_deadlines"}


def test_tpot_excludes_api_time() -> None:
    by_name = {o.req_id: o for o in OUTPUTS}
    assert time_per_output_token(by_name["meets_api_excluded"]) == pytest.approx(0.05)
    assert time_per_output_token(by_name["slow_tokens"]) == pytest.approx(0.2)
    assert time_per_output_token(by_name["one_token"]) is None
    assert time_per_output_token(by_name["no_first_token"]) is None


def test_goodput_counts_exactly_the_requests_meeting_both_deadlines() -> None:
    assert {o.req_id for o in OUTPUTS if SLO_1S_100MS.met_by(o)} == MEETING
    assert goodput(OUTPUTS, 8.0, SLO_1S_100MS) == pytest.approx(len(MEETING) / 8.0)
    metrics = summarize(OUTPUTS, 8.0, slo=SLO_1S_100MS)
    assert metrics["goodput_rps"] == pytest.approx(0.5)
    assert metrics["slo_attainment"] == pytest.approx(4 / 8)  # of all requests, the aborted one included
    assert metrics["throughput_rps"] == pytest.approx(7 / 8)  # goodput never exceeds throughput


def test_goodput_is_zero_when_no_request_meets_the_slo() -> None:
    tight = SLO(ttft=0.01, tpot=0.001)
    assert not any(tight.met_by(o) for o in OUTPUTS)
    assert goodput(OUTPUTS, 8.0, tight) == 0.0
    assert summarize(OUTPUTS, 8.0, slo=tight)["goodput_rps"] == 0.0
    assert goodput(OUTPUTS, 0.0, SLO_1S_100MS) == 0.0  # no duration, no rate
    assert summarize([], 1.0, slo=tight)["goodput_rps"] == 0.0


def test_slo_needs_positive_deadlines() -> None:
    with pytest.raises(ValueError, match="ttft"):
        SLO(ttft=0.0, tpot=0.1)
    with pytest.raises(ValueError, match="tpot"):
        SLO(ttft=1.0, tpot=float("inf"))
    assert SLO_1S_100MS.describe() == "SLO: TTFT <= 1 s, TPOT <= 100 ms"


def test_session_completion_summary() -> None:
    sessions = [
        output("short", ttft=0.5, latency=10.0, tokens=4),
        output("agent", ttft=0.5, latency=20.0, tokens=4, api=12.0),  # tool time counts toward the session
        output("long", ttft=0.5, latency=60.0, tokens=4),
        output("aborted", ttft=0.5, latency=1.0, tokens=4, finish="abort"),
    ]
    assert session_completion(sessions) == pytest.approx(
        {"session_mean": 30.0, "session_median": 20.0, "session_p99": 60.0}
    )
    metrics = summarize(sessions, 60.0, sessions=True)
    assert all(metrics[f"session_{s}"] == metrics[f"e2e_{s}"] for s in ("mean", "median", "p99"))
    assert all(v != v for v in session_completion([]).values())  # NaN without a finished session


def test_summarize_adds_nothing_unless_asked() -> None:
    keys = set(summarize(OUTPUTS, 8.0, window=5.0))
    assert not {k for k in keys if k.startswith(("goodput", "slo_", "session_"))}
    assert set(summarize(OUTPUTS, 8.0, window=5.0, slo=SLO_1S_100MS, sessions=True)) - keys == {
        "goodput_rps",
        "slo_attainment",
        "session_mean",
        "session_median",
        "session_p99",
    }


def test_slo_from_cost_scales_the_unloaded_latency() -> None:
    ctx = PROFILES["gptj-6b-a100-ctx"]
    # 1,000 tokens in chunks of B = 384: 384 over 0 cached, 384 over 384, 232 over 768
    expected = ctx.iteration_time(384, 0) + ctx.iteration_time(384, 384) + ctx.iteration_time(232, 768)
    assert unloaded_prefill_time(ctx, 1000) == pytest.approx(expected)
    slo = slo_from_cost(ctx, 1000, 3.0)
    assert slo.ttft == pytest.approx(3 * expected)
    assert slo.tpot == pytest.approx(3 * ctx.iteration_time(1, 1000))
    llama = PROFILES["llama31-8b-h100"]
    assert unloaded_prefill_time(llama, 2048) == pytest.approx(llama.iteration_time(2048))  # one chunk under 8192
    with pytest.raises(ValueError, match="prompt_tokens"):
        unloaded_prefill_time(ctx, 0)
    with pytest.raises(ValueError, match="scale"):
        slo_from_cost(ctx, 10, 0.0)


def test_default_slo_is_5x_the_unloaded_default_profile() -> None:
    assert DEFAULT_SLO_SCALE == 5.0
    # gptj-6b-a100, 2,048-token prompt: six chunks (5 x 384 + 128) = 0.0463 ms x 2048 + 6 x 10 ms = 154.82 ms
    assert DEFAULT_SLO.ttft == pytest.approx(5 * (0.0463e-3 * 2048 + 6 * 10e-3))
    assert DEFAULT_SLO.tpot == pytest.approx(5 * (0.0463e-3 + 10e-3))  # one decode step: 10.05 ms
    assert DEFAULT_SLO.describe() == (
        "SLO: TTFT <= 0.774 s, TPOT <= 50.2 ms (5x unloaded gptj-6b-a100 at a 2048-token prompt)"
    )

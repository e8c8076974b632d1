"""Agent sessions: the generator against the spec's quantiles, the example loader, scaling and caps, errors."""

from __future__ import annotations

import copy
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from lamps_jax.bench.harness import run_workload
from lamps_jax.bench.sim_grid import PAGE_SIZE, SimPoint
from lamps_jax.scheduler.cost_model import load_cost_model
from lamps_jax.sim.engine import simulated_engine
from lamps_jax.workload.agent_session_examples import DEFAULT_EXAMPLES, load_examples
from lamps_jax.workload.agent_session_spec import DEFAULT_SPEC, AgentSessionError, Quantiles, load_spec
from lamps_jax.workload.agent_sessions import (
    CUT_COUNTS,
    DEFAULT_MAX_CONTEXT_TOKENS,
    DEFAULT_TOKEN_SCALE,
    FIRST_INPUT_TOKENS,
    HUMAN,
    Session,
    generate,
    sample_sessions,
    session_arrivals,
)
from lamps_jax.workload.spec import WorkloadRequest

pytestmark = pytest.mark.skipif(
    not (DEFAULT_SPEC.is_file() and DEFAULT_EXAMPLES.is_file()),
    reason=f"agent session data not in {DEFAULT_SPEC.parent}",
)
NUM_SESSIONS = 3000  # ~250k rounds: a few seconds
SPEC = json.loads(DEFAULT_SPEC.read_text()) if DEFAULT_SPEC.is_file() else {}
SPEC_GROUPS = {
    "user_rounds": "session.user_initiated_steps_per_session",
    "tool_rounds": "session.tool_initiated_steps_per_session",
    "output_tokens": "step.output_tokens.merged",
    "context_growth": "step.context_growth_per_step.tool_result_older_snapshot",
    "human_wait": "human_in_the_loop.human_input_wait_positive",
}


def spec_group(dotted: str) -> dict:
    group = SPEC
    for key in dotted.split("."):
        group = group[key]
    return group


def log_tolerance(quantiles: Quantiles, p: float, n: int) -> float:
    """How far an empirical p-quantile of n draws may sit from the spec's, in log value.

    The probability of an empirical quantile has a standard error of sqrt(p(1-p)/n); its log value moves by that
    times the slope of log value per probability, 3-9 between most of the spec's points but 16-56 above p90 (human
    waits 41, planning 56). Three such errors, on the steeper side of p, plus 0.10 (10%, for rounding and for
    points read off figures to ~3%): 0.11-0.16 for tokens and the common kinds at p25/p50/p99 (~20k-270k draws),
    up to 0.3-0.5 at the kinks above p90 and for counts per session (3,000 draws) or the rare kinds' calls (~1k).
    """
    probabilities, log_values = np.array(quantiles.probabilities), np.log(quantiles.values)
    slopes = np.diff(log_values) / np.diff(probabilities)
    side = int(np.clip(np.searchsorted(probabilities, p), 1, len(slopes)))
    steepest = max(slopes[max(side - 2, 0) : side + 1])
    return 0.10 + 3 * steepest * math.sqrt(p * (1 - p) / n)


def assert_quantiles(draws: list[float] | np.ndarray, quantiles: Quantiles, name: str) -> None:
    """The draws' empirical quantiles at the spec's stated points, p50 and p90 at least, within tolerance."""
    draws = np.asarray(draws, dtype=float)
    for p, stated in zip(quantiles.probabilities, quantiles.values):
        if p == 0.99 and len(draws) < 20_000:  # too few draws above p99 to pin it
            continue
        gap = abs(math.log(max(np.quantile(draws, p), 1e-12)) - math.log(stated))
        assert gap <= log_tolerance(quantiles, p, len(draws)), (name, p, np.quantile(draws, p), stated)


@pytest.fixture(scope="module")
def sessions() -> list[Session]:
    return sample_sessions(NUM_SESSIONS, load_spec(), seed=0)


def user_rounds(session: Session) -> int:
    return 1 + sum(call.api_type == HUMAN for call in session.calls)


def test_quantiles_interpolate_log_values_and_extrapolate_the_end_slopes() -> None:
    q = Quantiles((0.25, 0.5, 0.9), (10.0, 40.0, 160.0), maximum=200.0)
    assert q.at(np.array([0.25, 0.5, 0.9])) == pytest.approx([10, 40, 160])
    assert float(q.at(0.375)) == pytest.approx(20.0)  # halfway in probability: the geometric mean
    assert float(q.at(0.0)) == pytest.approx(2.5)  # the first segment's slope continued
    assert float(q.at(0.95)) == pytest.approx(160 * 2**0.25)  # the last segment's slope continued
    assert float(q.at(0.9999)) == 200.0  # 226 unclipped: clipped to the stated max
    with pytest.raises(ValueError, match="non-decreasing"):
        Quantiles((0.5, 0.9), (10.0, 5.0))
    with pytest.raises(ValueError, match="rise strictly"):
        Quantiles((0.5, 0.5), (10.0, 20.0))


def test_spec_quantities_are_read_with_their_units() -> None:
    spec = load_spec()
    for attribute, dotted in SPEC_GROUPS.items():
        group = spec_group(dotted)
        assert getattr(spec, attribute).values == tuple(
            group[f"p{round(p * 100)}"] for p in getattr(spec, attribute).probabilities
        )
    assert spec.human_wait.maximum == spec_group(SPEC_GROUPS["human_wait"])["max"]
    assert set(spec.kinds) == {"shell", "edit", "read", "plan", "agent", "web", "other"}
    assert spec.kinds["shell"].seconds.values[1] == pytest.approx(0.844)  # 844 ms
    assert spec.kind_of("Bash") == "shell" and spec.kind_of("apply_patch") == "edit"
    assert spec.kind_of("SomeNewTool") == "other"


def test_rounds_per_session_follow_the_spec(sessions: list[Session]) -> None:
    spec = load_spec()
    users = [user_rounds(s) for s in sessions]
    tools = [len(s.output_tokens) - u for s, u in zip(sessions, users)]
    assert_quantiles(users, spec.user_rounds, "user-initiated rounds")
    assert_quantiles(tools, spec.tool_rounds, "tool-initiated rounds")
    rounds = spec_group("session.llm_rounds_per_session")  # the spec's own comonotone estimate
    for p in (25, 50, 90):
        assert abs(math.log(np.percentile([len(s.output_tokens) for s in sessions], p) / rounds[f"p{p}"])) < 0.15
    # ~11% of rounds start from a user message (10.7%: first_input_event_type counts over all rounds)
    share = sum(users) / sum(len(s.output_tokens) for s in sessions)
    assert share == pytest.approx(spec_group("step.share_user_initiated_pct")["value"] / 100, abs=0.015)
    assert all(s.first_input_tokens == FIRST_INPUT_TOKENS for s in sessions)


def test_round_tokens_follow_the_spec(sessions: list[Session]) -> None:
    spec = load_spec()
    outputs = [tokens for s in sessions for tokens in s.output_tokens]
    # a round's context growth is its fresh tokens (the call's result) plus the output before them
    growth = [out + call.num_result_tokens for s in sessions for out, call in zip(s.output_tokens, s.calls)]
    assert_quantiles(outputs, spec.output_tokens, "output tokens")
    assert_quantiles(growth, spec.context_growth, "context growth")
    assert min(call.num_result_tokens for s in sessions for call in s.calls) > 0  # growth never falls below output


def test_call_times_and_kind_mix_follow_the_spec(sessions: list[Session]) -> None:
    spec = load_spec()
    calls = [call for s in sessions for call in s.calls]
    by_name: dict[str, list[float]] = {}
    for call in calls:
        by_name.setdefault(call.api_type, []).append(call.duration)
    assert_quantiles(by_name.pop(HUMAN), spec.human_wait, "human wait")
    total = sum(kind.calls for kind in spec.kinds.values())
    num_tool_calls = sum(len(seconds) for seconds in by_name.values())
    for name, kind in spec.kinds.items():
        assert len(by_name[name]) / num_tool_calls == pytest.approx(kind.calls / total, abs=0.005), name
        assert_quantiles(by_name[name], kind.seconds, name)
    # the mix against the merged latency bins (calls under 1 s: 60.9%, over 1 min: 4.0%); the kinds' quantiles
    # are read off a figure and weighted by all calls, positive or not, so a few points apart
    seconds = np.concatenate([np.array(s) for s in by_name.values()])
    assert np.mean(seconds < 1) == pytest.approx(0.609, abs=0.03)
    assert np.mean(seconds > 60) == pytest.approx(0.040, abs=0.015)


def test_the_same_seed_draws_the_same_sessions() -> None:
    spec = load_spec()
    assert sample_sessions(50, spec, seed=7) == sample_sessions(50, spec, seed=7)
    assert sample_sessions(50, spec, seed=7) != sample_sessions(50, spec, seed=8)
    assert generate(20, seed=3).requests == generate(20, seed=3).requests


def example_rows() -> list[dict]:
    return [json.loads(line) for line in DEFAULT_EXAMPLES.read_text().splitlines()]


def test_examples_reproduce_the_file() -> None:
    workload = load_examples(token_scale=1.0, max_context_tokens=None)
    rows = example_rows()
    assert [r.request_id for r in workload.requests] == list(dict.fromkeys(row["session_id"] for row in rows))
    claude, codex = workload.requests
    assert [len(r.segments) for r in workload.requests] == [10, 9]  # README: 10 and 9 rounds
    assert [1 + r.api_types.count(HUMAN) for r in workload.requests] == [2, 3]  # README: 2 and 3 user turns
    for request in workload.requests:
        session_rows = [row for row in rows if row["session_id"] == request.request_id]
        assert request.prompt_tokens == session_rows[0]["input_tokens_total"]
        assert [s.num_tokens for s in request.segments] == [row["output_tokens"] for row in session_rows]
        starts = ["tool" if call != HUMAN else "user_message" for call in request.api_types]
        assert starts == [row["first_input_event_type"].replace("tool_result", "tool") for row in session_rows[1:]]
    # Claude's context only grows: prompt + outputs + fresh tokens = the last input + the last output
    assert (
        claude.prompt_tokens + claude.num_output_tokens + sum(len(s.result_token_ids) for s in claude.segments)
        == 48_305 + 852
    )
    # round 0 ran Bash (0.86 s) and WebSearch (19.3 s) side by side: one web call from the first call to the last
    # result; round 4 ended at 05:40:...; the user wrote 19.9 s later
    first = claude.segments[0].api_call
    assert (first.name, first.duration, len(first.result_token_ids)) == (
        "web",
        pytest.approx(20.102),
        35_740 - 32_272 - 931,
    )
    assert claude.segments[4].api_call.name == HUMAN
    assert claude.segments[4].api_call.duration == pytest.approx(19.913)
    assert set(codex.api_types) == {"shell", HUMAN}
    assert len(codex.segments[4].api_call.result_token_ids) == 0  # Codex's context shrank by 330 tokens: 0 fresh


def test_examples_scale_like_generated_sessions() -> None:
    workload = load_examples()
    assert workload.setting["token_scale"] == DEFAULT_TOKEN_SCALE
    assert [r.prompt_tokens for r in workload.requests] == [round(32_272 / 32), round(9_324 / 32)]
    assert workload.cuts == dict.fromkeys(CUT_COUNTS, 0)
    halved = load_examples(time_scale=0.5)
    for request, fast in zip(workload.requests, halved.requests):
        assert fast.total_api_time == pytest.approx(request.total_api_time / 2)


def context_tokens(request: WorkloadRequest) -> int:
    """Tokens in the KV when the request ends: prompt, every decoded token, every call's result."""
    return request.prompt_tokens + request.num_output_tokens + sum(len(s.result_token_ids) for s in request.segments)


def test_token_scale_and_time_scale_apply_to_every_count_and_duration() -> None:
    whole = generate(30, seed=5, token_scale=1.0, max_rounds=None, max_context_tokens=None)
    scaled = generate(30, seed=5, token_scale=0.1, time_scale=0.01, max_rounds=None, max_context_tokens=None)
    assert scaled.setting | {"token_scale": 1.0, "time_scale": 1.0} == whole.setting
    for real, small in zip(whole.requests, scaled.requests):
        assert small.prompt_tokens == round(real.prompt_tokens * 0.1)
        assert small.api_types == real.api_types
        for a, b in zip(real.segments, small.segments):
            assert b.num_tokens == max(1, round(a.num_tokens * 0.1))
            if a.api_call is not None:
                assert len(b.result_token_ids) == round(len(a.result_token_ids) * 0.1)
                assert b.api_call.duration == pytest.approx(a.api_call.duration * 0.01)


def test_caps_cut_sessions_and_count_what_they_cut() -> None:
    uncapped = generate(300, seed=2, max_rounds=None, max_context_tokens=None)
    capped = generate(300, seed=2)
    assert capped.setting["max_context_tokens"] == DEFAULT_MAX_CONTEXT_TOKENS
    assert max(context_tokens(r) for r in capped.requests) <= DEFAULT_MAX_CONTEXT_TOKENS
    cut = [(len(a.segments), len(b.segments)) for a, b in zip(uncapped.requests, capped.requests) if a != b]
    assert cut and all(kept < whole for whole, kept in cut)
    assert capped.cuts["sessions_cut_by_context"] + capped.cuts["sessions_cut_by_rounds"] == len(cut)
    assert capped.cuts["rounds_cut_by_context"] + capped.cuts["rounds_cut_by_rounds"] == sum(w - k for w, k in cut)
    for whole, kept in zip(uncapped.requests, capped.requests):  # a cut keeps the leading rounds
        assert kept.segments[:-1] == whole.segments[: len(kept.segments) - 1]
        assert kept.segments[-1].num_tokens == whole.segments[len(kept.segments) - 1].num_tokens

    few = generate(300, seed=2, max_rounds=5, max_context_tokens=None)
    assert max(len(r.segments) for r in few.requests) == 5
    lengths = [len(r.segments) for r in uncapped.requests]
    assert few.cuts["sessions_cut_by_rounds"] == sum(n > 5 for n in lengths)
    assert few.cuts["rounds_cut_by_rounds"] == sum(n - 5 for n in lengths if n > 5)
    assert few.cuts["sessions_cut_by_context"] == 0


def test_a_first_round_beyond_the_context_cap_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"first round takes .* max_context_tokens 8192"):
        generate(1, token_scale=1.0)
    for bad in ({"token_scale": 0.0}, {"time_scale": math.inf}, {"max_rounds": 0}, {"max_context_tokens": 1}):
        with pytest.raises(ValueError):
            generate(1, **bad)


def write_spec(tmp_path: Path, edit) -> Path:
    spec = copy.deepcopy(SPEC)
    edit(spec)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s["step"].pop("output_tokens"), r"missing 'step\.output_tokens\.merged'"),
        (lambda s: s["step"]["output_tokens"]["merged"].update(p90=10), "non-decreasing"),
        (lambda s: s["session"]["user_initiated_steps_per_session"].update(p50="1"), "must be numbers"),
        (lambda s: s["human_in_the_loop"]["human_input_wait_positive"].update(p25=0), r"> 0"),
        (lambda s: s["tool_calls"]["mixture_by_kind"].update(categories={}), "non-empty object"),
        (lambda s: s["tool_calls"]["mixture_by_kind"]["categories"]["planning"].pop("latency_ms"), "'planning'"),
        (lambda s: s["tool_calls"]["mixture_by_kind"]["categories"]["other"].update(calls=-1), "count >= 0"),
    ],
)
def test_a_malformed_spec_names_what_is_wrong(tmp_path: Path, edit, message: str) -> None:
    path = write_spec(tmp_path, edit)
    with pytest.raises(AgentSessionError, match=message) as raised:
        load_spec(path)
    assert str(path) in str(raised.value)


def test_an_unreadable_spec_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(AgentSessionError, match="cannot read"):
        load_spec(tmp_path / "bad.json")
    with pytest.raises(AgentSessionError, match="cannot read"):
        load_spec(tmp_path / "absent.json")


def write_examples(tmp_path: Path, rows: list) -> Path:
    path = tmp_path / "sessions.jsonl"
    path.write_text("\n".join(row if isinstance(row, str) else json.dumps(row) for row in rows))
    return path


def edited_rows(index: int, **changes) -> list[dict]:
    rows = example_rows()
    rows[index] = rows[index] | changes
    return rows


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["{not json"], "line 1: not valid JSON"),
        ([[1, 2]], "line 1: expected a JSON object"),
        ([], "no rounds"),
        (edited_rows(0, input_tokens_total=-5), "line 1: field 'input_tokens_total' is negative"),
        (edited_rows(1, output_tokens="many"), "line 2: field 'output_tokens' must be a int"),
        (edited_rows(2, round_index=7), "round indices"),
        (edited_rows(5, first_input_event_type="tool_result"), "line 6: a round that does not start from a user"),
        (edited_rows(0, tools=[{"tool_name": "Bash", "emitted_at": "soon", "result_at": "later"}]), "ISO 8601"),
    ],
)
def test_malformed_examples_name_the_line_and_field(tmp_path: Path, rows: list, message: str) -> None:
    with pytest.raises(AgentSessionError, match=message):
        load_examples(write_examples(tmp_path, rows))


def test_session_arrivals_send_each_session_once_as_a_poisson_process() -> None:
    requests = generate(400, seed=1).requests
    arrived = session_arrivals(requests, rate=0.5, seed=4)
    assert sorted(r.request_id for r in arrived) == sorted(r.request_id for r in requests)
    times = [r.arrival_time for r in arrived]
    assert times == sorted(times) and times[0] > 0
    assert np.mean(np.diff([0.0, *times])) == pytest.approx(2.0, rel=0.15)  # exponential gaps of mean 1 / rate
    assert session_arrivals(requests, 0.5, seed=4) == arrived
    with pytest.raises(ValueError, match="sessions/s"):
        session_arrivals(requests, rate=0.0)


@pytest.mark.parametrize("policy", ["vllm", "infercept", "lamps"])
def test_the_simulator_serves_generated_sessions_to_the_end(policy: str) -> None:
    workload = generate(6, seed=0)
    arrivals = session_arrivals(workload.requests, rate=0.5, seed=0)
    cost = load_cost_model("gptj-6b-a100")
    scheduler = SimPoint(trace="multi", rate=0.5, policy=policy).scheduler_config()
    engine = simulated_engine(cost, scheduler, page_size=PAGE_SIZE, max_model_len=DEFAULT_MAX_CONTEXT_TOKENS)
    result = run_workload(engine, arrivals, progress=False)
    assert Counter(o.finish_reason for o in result.outputs) == {
        "stop": 6
    }  # a scripted request stops after its last segment
    by_id = {o.req_id: o for o in result.outputs}
    for request in arrivals:
        output = by_id[request.request_id]
        assert (output.num_generated_tokens, output.num_api_calls) == (request.num_output_tokens, request.num_api_calls)

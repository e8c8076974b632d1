"""LAMPS+: its switches by name, and each switch's defining behaviour through the real Scheduler (no JAX)."""

from __future__ import annotations

import pytest

from lamps_jax.request import ApiCall, KVStrategy, RequestStatus, Segment
from lamps_jax.scheduler.policies import policy_class
from lamps_jax.scheduler.policies.lamps_plus import (
    AGING_HORIZON_S,
    RESERVE_HORIZON_TOKENS,
    SWITCHES,
    LampsPlusPolicy,
    parse_switches,
)
from tests.scheduler.test_policies import make, plain, scripted, step


def test_each_switch_turns_off_by_name_and_an_unknown_one_is_refused() -> None:
    assert parse_switches("lamps_plus") == frozenset(SWITCHES)
    assert parse_switches("lamps_plus-no_reserve-no_aging") == frozenset(SWITCHES) - {"reserve", "aging"}
    assert policy_class("lamps_plus-no_aging") is LampsPlusPolicy
    with pytest.raises(ValueError, match=r"unknown LAMPS\+ switch .*no_speed"):
        policy_class("lamps_plus-no_speed")
    with pytest.raises(ValueError, match="unknown scheduling policy 'lamps_extra'"):
        policy_class("lamps_extra")


def _queued_after(policy: str, delay: float) -> list[str]:
    """A long request queued at time 0, a short one ``delay`` seconds later: the waiting order."""
    s = make(policy)
    s.add_request(plain("long", 40, 200))  # the first plan: the typical score is this request's
    s.clock.t = delay
    s.add_request(plain("short", 4, 4, arrival=delay))
    assert s.requests["short"].priority < s.requests["long"].priority / 50
    return [r.req_id for r in s.waiting]


def test_aging_lets_a_request_make_up_one_typical_score_per_horizon_it_waits() -> None:
    """key = score / typical + time queued / horizon: the long request's key is 1, the short one's about
    delay / horizon, so the short one goes first only within a horizon of the long one's arrival."""
    assert _queued_after("lamps_plus", 0.5 * AGING_HORIZON_S) == ["short", "long"]
    assert _queued_after("lamps_plus", 1.5 * AGING_HORIZON_S) == ["long", "short"]
    assert _queued_after("lamps_plus-no_aging", 1.5 * AGING_HORIZON_S) == ["short", "long"]  # LAMPS's score order


def test_without_aging_the_order_is_lamps_score_and_starvation_promotion() -> None:
    s = make("lamps_plus-no_aging")
    s.add_request(plain("long", 40, 40))
    s.clock.t = 100.0
    s.add_request(plain("short", 8, 8, arrival=100.0))
    assert [r.req_id for r in s.waiting] == ["short", "long"]
    assert s.policy.starvation_threshold == s.config.starvation_threshold


def _growing_batch(policy: str):
    """Two running requests with 200 tokens to decode, on 40 pages of 4 tokens; then a 12-token prompt arrives."""
    s = make(policy, num_pages=41, max_num_seqs=8, budget=64)
    for index in range(2):
        s.add_request(plain(f"run{index}", 4, 200))
    step(s)
    s.add_request(plain("new", 12, 8))
    return s


def test_reserve_keeps_a_request_out_while_the_running_ones_need_their_next_pages() -> None:
    s = _growing_batch("lamps_plus")
    # each running request holds 5 tokens in 1 page and reserves pages up to 5 + 64 tokens: 18 - 1 pages
    reserved = 2 * (s.pages_for(5 + RESERVE_HORIZON_TOKENS) - 1)
    assert s.page_pool.num_free - reserved == 4  # the newcomer needs 5 pages for its 20 tokens
    step(s)
    assert s.requests["new"].status is RequestStatus.WAITING
    without = _growing_batch("lamps_plus-no_reserve")
    step(without)
    assert without.requests["new"].status is RequestStatus.RUNNING


def test_reserve_admits_anyway_when_nothing_runs() -> None:
    s = make("lamps_plus", num_pages=10)
    s.add_request(plain("only", 8, 200))
    step(s)
    assert s.requests["only"].status is RequestStatus.RUNNING


@pytest.mark.parametrize("switch_on", [True, False])
def test_reconsider_releases_a_preserved_call_that_runs_on_while_requests_wait_each_call_on_its_own(
    switch_on: bool,
) -> None:
    """The call's strategy is planned (Preserve, for a call believed short); the call runs 100 s instead, while a
    request waits: reconsidered, its KV is released. Its next call starts planned afresh."""
    policy = "lamps_plus" if switch_on else "lamps_plus-no_reconsider"
    s = make(policy, num_pages=40, api_time_source="type_mean")
    for _ in range(3):
        s.policy.api_times.observe("tool", 0.001)
    segments = [Segment(2, ApiCall("tool", duration=100.0)), Segment(2, ApiCall("tool", duration=100.0)), Segment(2)]
    request = scripted("agent", 60, segments)
    s.add_request(request)
    for _ in range(20):
        step(s)
        if request.num_generated_tokens >= 2:
            break
    s.pause(request, request.scripted_call())
    assert request.strategy is KVStrategy.PRESERVE and request.page_ids
    s.add_request(plain("waiting", 100, 8))  # 27 pages: more than the 24 the paused request leaves free
    s.clock.t += 60.0  # the call is predicted to have returned long ago: it runs on
    step(s)
    assert bool(request.page_ids) is not switch_on
    assert s.strategy_counts["preserve->discard"] + s.strategy_counts["preserve->swap"] == int(switch_on)
    s.resume("agent", [])
    assert request.strategy is None  # the next call is planned afresh, not by the last one's reconsidering

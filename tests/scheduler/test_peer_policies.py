"""Today's peers as policies (continuum, autellix, augserve, vllm_apc): each one's defining behaviour on hand-built
scenarios through the real Scheduler, calls of one request that must not share a decision, and forward progress
on the simulated engine (no JAX)."""

from __future__ import annotations

from collections import Counter

import pytest

from lamps_jax.config import SchedulerConfig
from lamps_jax.request import ApiCall, KVStrategy, Request, RequestStatus, SamplingParams, Segment
from lamps_jax.scheduler.policies.continuum import choose_ttl
from lamps_jax.scheduler.scheduler import Scheduler
from tests.scheduler.test_policies import make, plain, scripted
from tests.scheduler.test_scheduler import fake_run

PEERS = ["continuum", "autellix", "augserve", "vllm_apc"]


def check(s: Scheduler) -> None:
    """Page ownership, prefix sharing allowed: a page held by n requests has reference count n."""
    held = Counter(p for r in s.requests.values() for p in r.page_ids)
    held.update(p for parked in s.parked.values() for p in parked.page_ids)
    assert all(s.page_pool.ref_count(p) == n for p, n in held.items())
    assert len(held) + s.page_pool.num_free == s.page_pool.num_usable
    s.page_pool.check_invariants()


def step(s: Scheduler) -> list:
    """One iteration; scripted calls pause their request and finished scripts end theirs."""
    out = s.schedule()
    check(s)
    s.clock.t += 0.01  # the step runs
    s.update(out, fake_run(out))
    for request in [r for r in s.running if r.req_id in {c.req_id for c in out.scheduled if c.samples}]:
        call = request.scripted_call()
        if call is not None:
            s.pause(request, call)
        elif request.script_done:
            s.finish_request(request.req_id, RequestStatus.FINISHED_STOPPED)
    return out.scheduled


def run_until(s: Scheduler, done, max_steps: int = 1000) -> None:
    for _ in range(max_steps):
        if done():
            return
        step(s)
    raise AssertionError("the scenario never got there")


def paused(*requests: Request):
    return lambda: all(r.status is RequestStatus.PAUSED_API for r in requests)


def fast_and_slow_tools(s: Scheduler) -> None:
    for _ in range(5):
        s.policy.api_times.observe("fast", 0.001)
        s.policy.api_times.observe("slow", 30.0)


# ---- continuum ------------------------------------------------------------------------------


def test_continuum_ttl_maximises_the_expected_benefit_over_the_tools_durations() -> None:
    assert choose_ttl([0.01] * 9 + [100.0], context=10, benefit=1.0) == 0.01  # covers 90% of calls, not the tail
    assert choose_ttl([0.01] * 9 + [100.0], context=10, benefit=5000.0) == 100.0  # worth waiting for the tail
    assert choose_ttl([30.0], context=10, benefit=1.0) == 0.0  # not worth pinning at all


def pinned_for(s: Scheduler) -> float:
    """The TTL a call of the "fast" tool gets: its observed duration, plus one full iteration of grace."""
    return 0.001 + s.policy.cost.iteration_time(s.config.max_num_batched_tokens)


@pytest.mark.parametrize("expired", [False, True])
def test_continuum_pins_for_the_tools_ttl_and_releases_the_pages_when_it_expires(expired: bool) -> None:
    s = make("continuum", num_pages=200)
    fast_and_slow_tools(s)
    r = scripted("r", 40, [Segment(2, ApiCall("fast", result_token_ids=(5,))), Segment(2)])
    s.add_request(r)
    run_until(s, paused(r))
    assert r.strategy is KVStrategy.PRESERVE and s.policy.expiry["r"] == pytest.approx(s.clock.t + pinned_for(s))
    pages, computed = list(r.page_ids), r.num_computed_tokens
    s.clock.t += pinned_for(s) * (1.5 if expired else 0.5)
    s.schedule()  # an iteration before the call returns: it expires the pin if the TTL has passed
    assert (r.page_ids == []) is expired and s.strategy_counts["ttl_expired"] == int(expired)
    assert s.page_pool.num_free == s.page_pool.num_usable - (0 if expired else len(pages))
    s.resume("r", [5])
    if expired:  # recomputed from the waiting queue
        assert r.status is RequestStatus.WAITING and r.num_computed_tokens == 0
    else:  # back with its KV
        assert r.status is RequestStatus.RUNNING and r.page_ids == pages and r.num_computed_tokens == computed
    run_until(s, lambda: not s.has_unfinished())
    assert s.page_pool.num_free == s.page_pool.num_usable


def test_continuum_releases_a_pin_that_expired_while_no_iteration_ran() -> None:
    s = make("continuum", num_pages=200)
    fast_and_slow_tools(s)
    r = scripted("r", 40, [Segment(2, ApiCall("fast", result_token_ids=(5,))), Segment(2)])
    s.add_request(r)
    run_until(s, paused(r))
    s.clock.t += 0.5
    s.resume("r", [5])
    assert r.status is RequestStatus.WAITING and not r.page_ids and s.strategy_counts["ttl_expired"] == 1


def test_continuum_decides_each_call_afresh() -> None:
    """A pin serves one call: a slow tool's call after a pinned one discards at once, and a later fast call's TTL
    counts from its own start, long after the first pin's expiry."""
    s = make("continuum", num_pages=200)
    fast_and_slow_tools(s)
    calls = [ApiCall("fast", result_token_ids=(5,)), ApiCall("slow", result_token_ids=(6,))]
    r = scripted("r", 40, [Segment(2, calls[0]), Segment(2, calls[1]), Segment(2, calls[0]), Segment(2)])
    s.add_request(r)
    run_until(s, paused(r))
    first_expiry = s.policy.expiry["r"]
    s.resume("r", [5])  # at once: kept
    assert r.status is RequestStatus.RUNNING and r.page_ids and "r" not in s.policy.expiry
    run_until(s, paused(r))
    assert r.strategy is KVStrategy.DISCARD and not r.page_ids and "r" not in s.policy.expiry
    s.clock.t += 1.0
    s.resume("r", [6])
    run_until(s, paused(r))
    assert r.strategy is KVStrategy.PRESERVE and s.policy.expiry["r"] > first_expiry + 1.0
    s.clock.t += pinned_for(s) / 2
    s.schedule()
    s.resume("r", [5])
    assert r.status is RequestStatus.RUNNING and r.page_ids and s.strategy_counts["ttl_expired"] == 0


def test_continuum_orders_waiting_requests_by_their_programs_first_arrival() -> None:
    orders = {}
    for policy in ("continuum", "fcfs"):
        s = make(policy, max_num_seqs=1)
        first = Request("a1", [1] * 8, SamplingParams(max_tokens=2), 0.0, seed=0, session_id="a")
        s.add_request(first)
        step(s)
        s.finish_request("a1", RequestStatus.FINISHED_STOPPED)  # parks session a
        s.add_request(plain("b", 8, 2, arrival=3.0))
        s.add_request(Request("a2", [1] * 12, SamplingParams(max_tokens=2), 5.0, seed=0, session_id="a"))
        orders[policy] = [r.req_id for r in s.waiting]
    assert orders == {"continuum": ["a2", "b"], "fcfs": ["b", "a2"]}


# ---- autellix -------------------------------------------------------------------------------


def test_autellix_orders_by_the_service_its_program_attained_over_its_calls() -> None:
    """Program a (two calls) arrives after c and d. After its first call it has had less service than c and goes
    first; after its second (the recompute of its discarded context included) it has had more than d."""
    s = make("autellix", num_pages=1000, budget=4096)
    call = ApiCall("t", result_token_ids=(5,) * 5)
    a = scripted("a", 100, [Segment(1, call), Segment(1, call), Segment(1)], arrival=1.0)
    c = scripted("c", 180, [Segment(1, call), Segment(1)], arrival=0.0)
    d = scripted("d", 180, [Segment(1, call), Segment(1)], arrival=0.5)
    for r in (a, c, d):
        s.add_request(r)
    run_until(s, paused(a, c, d))
    assert all(not r.page_ids for r in (a, c, d))  # every call discards
    after_first = s.policy.attained(a)
    assert after_first == 100 and s.policy.attained(c) == 180
    s.resume("a", [5] * 5)
    s.resume("c", [5] * 5)
    assert [r.req_id for r in s.waiting] == ["a", "c"]
    run_until(s, paused(a))
    assert s.policy.attained(a) == after_first + 106  # the recompute of 100 + 1 + 5 tokens is service too
    s.resume("d", [5] * 5)
    s.resume("a", [5] * 5)
    assert [r.req_id for r in s.waiting] == ["d", "a"]
    assert a.priority == s.policy.attained(a) > d.priority == 180
    run_until(s, lambda: not s.has_unfinished())
    assert s.page_pool.num_free == s.page_pool.num_usable


def test_autellix_forgets_the_service_of_requests_that_ended() -> None:
    s = make("autellix", num_pages=1000, max_num_seqs=4, budget=64)
    for i in range(300):
        s.add_request(plain(f"r{i}", 12, 3, arrival=float(i)))
    run_until(s, lambda: not s.has_unfinished(), max_steps=5000)
    assert 0 < len(s.policy._counted) <= 2 * 4 + 64 and len(s.policy.service) <= len(s.policy._counted)


def test_autellix_sums_a_sessions_turns_and_preempts_the_most_served_program() -> None:
    s = make("autellix", num_pages=1000, budget=4096)
    turn = Request("s1", [1] * 30, SamplingParams(max_tokens=3), 0.0, seed=0, session_id="chat")
    s.add_request(turn)
    run_until(s, lambda: not s.has_unfinished())
    served = s.policy.session_service["chat"]
    assert served >= 30
    s.add_request(Request("s2", [1] * 40, SamplingParams(max_tokens=2), 1.0, seed=0, session_id="chat"))
    s.add_request(plain("fresh", 10, 2, arrival=2.0))
    assert [r.req_id for r in s.waiting] == ["fresh", "s2"]
    step(s)
    running = {r.req_id: r for r in s.running}
    assert s.policy.choose_victim(s, list(running.values())) is running["s2"]


# ---- augserve -------------------------------------------------------------------------------


def test_augserve_rescores_with_the_length_a_call_returned() -> None:
    """Stage I predicts what a call returns (nothing before any call of its type returned), so a request whose
    call brings back 300 tokens ranks ahead of a mid-sized one until its call returns, and behind it after."""
    s = make("augserve", num_pages=1000, max_num_seqs=1, budget=4096)
    r = scripted("r", 20, [Segment(2, ApiCall("search", duration=0.01, result_token_ids=(4,) * 300)), Segment(5)])
    s.add_request(r)
    run_until(s, paused(r))
    w = plain("w", 60, 10, arrival=1.0)
    s.add_request(w)
    assert r.priority < w.priority  # its score as planned at arrival
    s.resume("r", [4] * 300)
    assert r.priority > w.priority
    assert [q.req_id for q in s.waiting] == ["w", "r"]
    assert s.policy.returned_tokens("search") == 300 and s.policy.in_flight == {}
    later = scripted("later", 20, [Segment(2, ApiCall("search", result_token_ids=(4,) * 10)), Segment(5)])
    assert s.policy.forecast_next(later).returned_tokens == 300  # the next call of the type is predicted from it


def test_augserve_plans_and_rescores_each_call_on_its_own() -> None:
    s = make("augserve", num_pages=1000, budget=4096)
    s.policy.api_times.observe("calc", 0.001)
    s.policy.api_times.observe("human", 30.0)
    calc = ApiCall("calc", duration=0.001, result_token_ids=(5,) * 8)
    human = ApiCall("human", duration=30.0, result_token_ids=(6,) * 2)
    r = scripted("r", 200, [Segment(2, calc), Segment(2, human), Segment(2)])
    s.add_request(r)
    run_until(s, paused(r))
    assert r.strategy is KVStrategy.PRESERVE and r.planned_strategy is None
    s.resume("r", [5] * 8)
    assert s.policy.in_flight == {} and s.policy.returned_tokens("calc") == 8
    run_until(s, paused(r))
    assert r.strategy is KVStrategy.DISCARD  # planned for the human call, not left over from the calc call
    before = r.priority
    s.resume("r", [6] * 2)
    assert r.priority != before and s.policy.returned_tokens("human") == 2
    run_until(s, lambda: not s.has_unfinished())
    assert s.page_pool.num_free == s.page_pool.num_usable


def test_augserve_token_budget_shrinks_as_running_requests_fill_the_kv_memory() -> None:
    chunks = {}
    for policy in ("augserve", "lamps"):
        s = make(policy, num_pages=101, budget=64, adaptive_budget_floor=0.25)
        assert s.policy.token_budget(s) == 64
        a = plain("a", 160, 50)
        s.add_request(a)
        run_until(s, lambda a=a: a.num_computed_tokens >= 160)
        s.add_request(plain("b", 400, 5, arrival=1.0))
        budget = s.policy.token_budget(s)
        chunks[policy] = {c.req_id: c.num_new_tokens for c in step(s)}["b"]
        assert chunks[policy] == budget - 1  # a's decode takes one token
    assert chunks["lamps"] == 63
    assert chunks["augserve"] == round(64 * (1 - 41 / 100)) - 1  # a holds 41 of the 100 pages


def test_augserve_token_budget_has_a_floor_and_counts_paused_memory_as_room() -> None:
    s = make("augserve", num_pages=101, budget=64, adaptive_budget_floor=0.25)
    s.policy.api_times.observe("calc", 0.0001)
    r = scripted("r", 390, [Segment(1, ApiCall("calc", duration=0.0001)), Segment(1)])
    s.add_request(r)
    step(s)
    assert s.policy.token_budget(s) == round(64 * (1 - 16 / 100))
    run_until(s, paused(r))
    assert r.strategy is KVStrategy.PRESERVE and len(r.page_ids) == 98
    assert s.policy.token_budget(s) == 64  # held by a paused request: room
    s.resume("r", [])
    assert s.policy.token_budget(s) == 16  # running with 98 of 100 pages: the floor


# ---- vllm_apc -------------------------------------------------------------------------------


def test_vllm_apc_turns_prefix_caching_on() -> None:
    assert SchedulerConfig(policy="vllm_apc").enable_prefix_caching
    assert SchedulerConfig(policy="vllm_apc", enable_prefix_caching=False).enable_prefix_caching
    assert not SchedulerConfig(policy="vllm").enable_prefix_caching
    with pytest.raises(ValueError, match="adaptive_budget_floor"):
        SchedulerConfig(adaptive_budget_floor=0.0)


def _first_chunk_after_resume(s: Scheduler, r: Request, result: list[int]) -> int:
    s.resume(r.req_id, result)
    while True:
        chunk = next((c for c in s.schedule().scheduled if c.req_id == r.req_id), None)
        if chunk is not None:
            return chunk.num_computed_tokens


@pytest.mark.parametrize("policy", ["vllm_apc", "vllm"])
def test_vllm_apc_resumes_a_discarded_request_from_the_prefix_cache_at_every_call(policy: str) -> None:
    """Both calls discard; the request each returns as finds the full pages of its context cached."""
    s = make(policy, num_pages=200, kv_strategy="discard")
    call = ApiCall("t", result_token_ids=(5, 5))
    r = scripted("r", 40, [Segment(2, call), Segment(3, call), Segment(2)])
    s.add_request(r)
    restored = []
    for _ in range(2):
        run_until(s, paused(r))
        assert r.strategy is KVStrategy.DISCARD and not r.page_ids and r.num_computed_tokens == 0
        cached = (r.num_tokens - 1) // 4 * 4  # the full pages it had computed when its call began
        restored.append((_first_chunk_after_resume(s, r, [5, 5]), cached))
        s.update(out := s.schedule(), fake_run(out))
    if policy == "vllm":
        assert [got for got, _ in restored] == [0, 0]
    else:
        assert [got for got, _ in restored] == [cached for _, cached in restored] == [40, 44]
        assert s.prefix_cache_pages["hit"] == 21


def test_vllm_apc_queues_a_returned_call_behind_later_arrivals_and_preempts_the_last_admitted() -> None:
    s = make("vllm_apc", max_num_seqs=4)
    r = scripted("r", 8, [Segment(2, ApiCall("t", result_token_ids=(5,))), Segment(2)])
    s.add_request(r)
    run_until(s, paused(r))
    s.add_request(plain("late", 8, 3, arrival=5.0))
    s.resume("r", [5])
    assert [q.req_id for q in s.waiting] == ["late", "r"]
    step(s)
    first, second = s.running
    assert s.policy.choose_victim(s, [second, first]) is second


# ---- progress -------------------------------------------------------------------------------

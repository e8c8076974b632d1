"""Policy behaviour on hand-built scenarios, and invariants of every policy over random runs (no JAX)."""

from __future__ import annotations

import random

import pytest

from lamps_jax.config import SchedulerConfig
from lamps_jax.paged_kv.page_pool import PagePool
from lamps_jax.request import ApiCall, KVStrategy, Request, RequestStatus, SamplingParams, Segment
from lamps_jax.scheduler.policies import POLICIES
from lamps_jax.scheduler.scheduler import Scheduler
from lamps_jax.scheduler.waiting_queue import MAX_PROMOTIONS
from tests.scheduler.test_scheduler import FakeClock, check_step, fake_run


def make(policy: str, num_pages: int = 400, max_num_seqs: int = 8, budget: int = 64, **kwargs) -> Scheduler:
    config = SchedulerConfig(policy=policy, max_num_seqs=max_num_seqs, max_num_batched_tokens=budget, **kwargs)
    return Scheduler(config, PagePool(num_pages), 4, 4096, FakeClock())


def scripted(req_id: str, prompt_len: int, segments: list[Segment], arrival: float = 0.0) -> Request:
    total = sum(s.num_tokens + len(s.result_token_ids) for s in segments)
    return Request(
        req_id, [1] * prompt_len, SamplingParams(max_tokens=total), arrival, seed=0, segments=tuple(segments)
    )


def plain(req_id: str, prompt_len: int, max_tokens: int, arrival: float = 0.0) -> Request:
    return Request(req_id, [1] * prompt_len, SamplingParams(max_tokens=max_tokens), arrival, seed=0)


def step(s: Scheduler) -> list[Request]:
    out = s.schedule()
    check_step(s, out)
    finished = s.update(out, fake_run(out))
    s.clock.t += 0.01
    return finished


def run_until_paused(s: Scheduler, request: Request) -> None:
    while request.status is not RequestStatus.PAUSED_API:
        step(s)
        call = request.scripted_call() if request.status is RequestStatus.RUNNING else None
        if call is not None:
            s.pause(request, call)


def test_vllm_requeues_a_returned_request_at_the_back_and_fcfs_by_arrival() -> None:
    for policy, expected in (("vllm", ["b", "c", "a"]), ("fcfs", ["a", "b", "c"])):
        s = make(policy, max_num_seqs=1, kv_strategy="discard")
        a = scripted("a", 4, [Segment(2, ApiCall("t", duration=1.0, result_token_ids=(5,))), Segment(2)])
        s.add_request(a)
        run_until_paused(s, a)
        s.add_request(plain("b", 4, 3, arrival=1.0))
        s.add_request(plain("c", 4, 3, arrival=2.0))
        assert not s.running  # nothing was scheduled since a paused: b and c wait
        s.resume("a", [5])
        assert [r.req_id for r in s.waiting] == expected, policy
        while s.has_unfinished():  # a reachable state: it runs to the end and frees every page
            step(s)
            for r in [r for r in s.running if r.scripted_call() is None and r.script_done]:
                s.finish_request(r.req_id, RequestStatus.FINISHED_STOPPED)
        assert s.page_pool.num_free == s.page_pool.num_usable


def test_lamps_admits_the_smaller_memory_time_area_first_even_with_a_longer_output() -> None:
    for policy, first in (("lamps", "long_output_small_prompt"), ("sjf", "short_output_big_prompt")):
        s = make(policy, num_pages=1000, max_num_seqs=1, budget=4096)
        s.add_request(plain("short_output_big_prompt", 2000, 10, arrival=0.0))
        s.add_request(plain("long_output_small_prompt", 10, 60, arrival=1.0))
        out = s.schedule()
        assert [c.req_id for c in out.scheduled] == [first], policy


def _admission_order(s: Scheduler, first: Request, iterations: int = 12) -> list[str]:
    """Adds a small request before each step; the ids admitted, up to ``first``'s admission."""
    admitted = []
    for i in range(iterations):
        s.add_request(plain(f"small{i}", 10, 1, arrival=1.0 + i))
        out = s.schedule()
        admitted += [c.req_id for c in out.scheduled if c.num_computed_tokens == 0]
        s.update(out, fake_run(out))
        s.clock.t += 0.01
        if first.req_id in admitted:
            break
    return admitted


def test_lamps_promotes_a_request_passed_over_past_the_starvation_threshold() -> None:
    s = make("lamps", num_pages=1000, max_num_seqs=1, budget=4096, starvation_threshold=5, starvation_scope="all")
    big = plain("big", 2000, 50, arrival=0.0)
    s.add_request(big)
    assert _admission_order(s, big).index("big") == 5  # passed over 5 times, then first


def test_lamps_ages_only_requests_that_ran_before_by_default() -> None:
    """As the LAMPS code counts starvation (only requests scheduled once accrue), a new arrival never ages."""
    s = make("lamps", num_pages=1000, max_num_seqs=1, budget=4096, starvation_threshold=5)
    big = plain("big", 2000, 50, arrival=0.0)
    s.add_request(big)
    assert "big" not in _admission_order(s, big)


def test_lamps_serves_the_starved_in_score_order_and_scales_with_the_queue() -> None:
    s = make("lamps", num_pages=1000, max_num_seqs=1, budget=4096, starvation_threshold=2, starvation_scope="all")
    for i, prompt in enumerate((900, 300, 600)):
        s.add_request(plain(f"starved{prompt}", prompt, 5, arrival=float(i)))
    s.iteration = 10  # all three have waited past the threshold
    s.policy.on_iteration(s)
    s.add_request(plain("fresh", 5, 1, arrival=9.0))  # the smallest score, but not starved
    assert [r.req_id for r in s.waiting] == ["starved300", "starved600", "starved900", "fresh"]


def test_lamps_fixes_the_cheapest_strategy_at_arrival() -> None:
    s = make("lamps", num_host_pages=0)
    long_call = scripted("long", 8, [Segment(2, ApiCall("human", duration=30.0)), Segment(2)])
    s.policy.api_times.observe("human", 30.0)
    s.add_request(long_call)
    assert long_call.planned_strategy is KVStrategy.DISCARD  # 30 s of holding memory beats recomputing 10 tokens
    s.policy.api_times.observe("calc", 0.0001)
    instant = scripted("instant", 300, [Segment(2, ApiCall("calc", duration=0.0001)), Segment(2)])
    s.add_request(instant)
    assert instant.planned_strategy is KVStrategy.PRESERVE


def test_lamps_plans_every_call_afresh_after_a_preserved_one() -> None:
    """A plan serves one call: after a Preserve resume the next call (a 30 s human) is planned anew."""
    s = make("lamps", num_pages=1000, budget=4096)
    s.policy.api_times.observe("calc", 0.001)
    s.policy.api_times.observe("human", 30.0)
    r = scripted(
        "r",
        200,
        [
            Segment(2, ApiCall("calc", duration=0.001, result_token_ids=(5,))),
            Segment(2, ApiCall("human", duration=30.0, result_token_ids=(6,))),
            Segment(2),
        ],
    )
    s.add_request(r)
    run_until_paused(s, r)
    assert r.strategy is KVStrategy.PRESERVE
    assert r.planned_strategy is None  # used up by the call it was made for
    score_for_first_call = r.priority
    s.resume("r", [5])
    assert r.priority != score_for_first_call
    run_until_paused(s, r)
    assert r.strategy is KVStrategy.DISCARD


@pytest.mark.parametrize("kv_strategy", ["preserve", "discard", "swap"])
def test_every_resume_tells_the_policy(kv_strategy: str) -> None:
    s = make("fcfs", kv_strategy=kv_strategy, num_host_pages=100)
    resumed = []
    s.policy.on_resume = lambda scheduler, request: resumed.append((request.req_id, request.num_tokens))
    r = scripted("r", 8, [Segment(2, ApiCall("t", duration=1.0, result_token_ids=(5, 5))), Segment(2)])
    s.add_request(r)
    run_until_paused(s, r)
    assert r.strategy is KVStrategy(kv_strategy)
    step(s)  # issues a swap-out
    s.resume("r", [5, 5])
    assert resumed == [("r", 12)]  # told once, after the result was appended


def test_a_request_swapped_in_this_step_is_never_the_preemption_victim() -> None:
    s = make("fcfs", num_pages=12, kv_strategy="swap", num_host_pages=16, max_num_seqs=4, budget=64)
    a = plain("a", 4, 40, arrival=0.0)
    b = scripted("b", 4, [Segment(1, ApiCall("t", duration=1.0, result_token_ids=(5,))), Segment(4)], arrival=1.0)
    s.add_request(a)
    s.add_request(b)
    run_until_paused(s, b)
    step(s)  # b's pages go to the host
    assert b.host_page_ids and not b.page_ids
    while len(a.page_ids) >= s.pages_for(a.num_tokens):  # until a's next token needs a new page
        step(s)
    s.resume("b", [5])
    held = s.page_pool.allocate(s.page_pool.num_free - len(b.host_page_ids))  # no page to spare after b's swap-in
    out = s.schedule()
    assert [copy.req_id for copy in out.swap_in] == ["b"]
    assert out.preempted_ids == ["a"]  # fcfs would pick the latest arrival, b, were it a candidate
    swapped_in_pages = out.swap_in[0].page_ids
    assert b.status is RequestStatus.RUNNING and b.page_ids[: len(swapped_in_pages)] == swapped_in_pages
    owned = [p for r in s.requests.values() for p in r.page_ids] + held
    assert len(owned) == len(set(owned)) == s.page_pool.num_usable - s.page_pool.num_free


def _paused_batch(policy: str, contexts: list[int], duration: float, **kwargs) -> tuple[Scheduler, list[Request]]:
    s = make(policy, num_pages=1000, budget=4096, api_time_source="oracle", **kwargs)
    requests = [
        scripted(f"r{i}", c, [Segment(1, ApiCall("chat", duration=duration)), Segment(1)])
        for i, c in enumerate(contexts)
    ]
    for r in requests:
        s.add_request(r)
    step(s)
    for r in requests:
        s.pause(r, r.scripted_call())
    return s, requests


def test_infercept_preserves_at_the_call_then_discards_all_but_the_largest_discard_waste() -> None:
    """vllm/core/scheduler_v2.py:143-149 (Preserve at the call) and 630-655 (discard every candidate whose discard
    waste is below the largest; the largest stays, as the first victim)."""
    s, requests = _paused_batch("infercept", [40, 80, 120, 160], duration=100.0)
    assert all(r.strategy is KVStrategy.PRESERVE for r in requests)
    s.schedule()
    assert [r.strategy for r in requests] == [KVStrategy.DISCARD] * 3 + [KVStrategy.PRESERVE]
    assert s.policy.choose_victim(s, []) is requests[3]
    s2, short = _paused_batch("infercept", [40, 80], duration=0.0001)  # preserving is cheaper: nothing changes
    s2.schedule()
    assert all(r.strategy is KVStrategy.PRESERVE and r.page_ids for r in short)


def test_infercept_swap_budget_is_the_one_its_code_derives_for_gptj() -> None:
    """_set_max_ragged_batch (scheduler_v2.py:732-746) with the GPT-J-6B constants of exps/6B_bench.sh:
    in = 0.00462·384 + 108.99 + free/2 tokens, out = 1.00462·384 + 108.99 - free/2 tokens."""
    s = make("infercept", num_pages=101, swap_budget="infercept", cost_profile="gptj-6b-a100", budget=384)
    free_tokens = 100 * 4
    assert s._swap_budgets() == ((384 + 111 - free_tokens // 2) // 4, (111 + free_tokens // 2) // 4)
    s.page_pool.allocate(100)  # no free memory: the most it swaps out
    assert s._swap_budgets() == ((384 + 111) // 4, 111 // 4)


VARIANTS = (
    {},
    {"admission": "whole", "decodes_first": False, "swap_budget": "infercept"},
    {"swap_budget": "overlap", "starvation_scope": "all", "api_time_source": "oracle"},
)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_random_runs_with_api_calls_keep_every_invariant(policy: str, seed: int) -> None:
    rng = random.Random(seed)
    variant = VARIANTS[seed]
    s = make(
        policy,
        num_pages=60,
        max_num_seqs=6,
        budget=24,
        num_host_pages=30,
        kv_strategy="swap",
        max_swap_pages_per_step=6,
        starvation_threshold=20,
        **variant,
    )
    requests = []
    for i in range(30):
        segments = [
            Segment(rng.randint(1, 6), ApiCall("t", duration=0.0, result_token_ids=(3,) * rng.randint(0, 6)))
            for _ in range(rng.randint(0, 2))
        ] + [Segment(rng.randint(1, 6))]
        requests.append(scripted(str(i), rng.randint(1, 40), segments, arrival=float(i)))
        s.add_request(requests[-1])
    returns: dict[str, int] = {}
    finished = []
    for iteration in range(20_000):
        if not s.has_unfinished():
            break
        for req_id in [r for r, due in returns.items() if due <= iteration]:
            del returns[req_id]
            s.resume(req_id, [3] * rng.randint(0, 4))
        out = s.schedule()
        check_step(s, out)
        if s.host_pool is not None:
            s.host_pool.check_invariants()
        finished += s.update(out, fake_run(out))
        for request in list(s.running):
            if request.req_id in {c.req_id for c in out.scheduled if c.samples}:
                call = request.scripted_call()
                if call is not None:
                    s.pause(request, call)
                    returns[request.req_id] = iteration + rng.randint(0, 5)
                elif request.script_done:
                    finished.append(s.finish_request(request.req_id, RequestStatus.FINISHED_STOPPED))
        s.clock.t += 0.01
    assert sorted(r.req_id for r in finished) == sorted(r.req_id for r in requests)
    assert s.page_pool.num_free == s.page_pool.num_usable
    assert s.host_pool.num_free == s.host_pool.num_usable


def test_starvation_promotes_a_bounded_number_per_iteration_oldest_first() -> None:
    """When thousands starve at once, no single schedule() pays for all of them: the oldest go first."""
    s = make("lamps", num_pages=10, max_num_seqs=1, starvation_threshold=2, starvation_scope="all")
    for i in range(MAX_PROMOTIONS + 10):
        s.add_request(plain(f"r{i}", 5, 1, arrival=float(i)))
    s.iteration = 10
    s.policy.on_iteration(s)
    assert len(s.waiting._starved) == MAX_PROMOTIONS
    assert {e[2].req_id for e in s.waiting._starved} == {f"r{i}" for i in range(MAX_PROMOTIONS)}
    s.policy.on_iteration(s)
    assert len(s.waiting._starved) == MAX_PROMOTIONS + 10

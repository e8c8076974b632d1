"""The modelling choices docs/RESULTS.md ("Modelling choices") names, each pinned to what the reference code does."""

from __future__ import annotations

import pytest

from lamps_jax.bench.harness import run_workload
from lamps_jax.bench.metrics import preemptions
from lamps_jax.bench.sim_grid import SimPoint, _trace_requests
from lamps_jax.request import RequestStatus
from lamps_jax.scheduler.cost_model import PROFILES
from lamps_jax.scheduler.waste import memory_time_score
from lamps_jax.sim.engine import simulated_engine
from lamps_jax.workload.arrivals import poisson_arrivals
from lamps_jax.workload.traces import DEFAULT_TRACES
from tests.scheduler.test_policies import make, plain, step
from tests.scheduler.test_scheduler import check_step, fake_run

COMPARED = ("vllm", "infercept", "infercept_swap", "lamps")


def test_simulated_points_run_the_reference_systems_settings() -> None:
    """Item 1: vLLM 0.2's default of 256 running requests (arg_utils.py:28), which no reference script changed;
    each policy's admission and swap budget are those of the system it reproduces."""
    resolved = {p: SimPoint("multi", 3.0, p).scheduler_config() for p in COMPARED}
    assert {c.max_num_seqs for c in resolved.values()} == {256}
    assert {p: c.admission for p, c in resolved.items()} == {
        "vllm": "whole",
        "infercept": "chunk",
        "infercept_swap": "chunk",
        "lamps": "chunk",
    }
    assert {p: c.swap_budget for p, c in resolved.items()} == {
        "vllm": "fixed",
        "infercept": "infercept",
        "infercept_swap": "overlap",
        "lamps": "unlimited",
    }
    assert resolved["vllm"].admission_watermark == 0.01
    assert SimPoint("multi", 3.0, "lamps", max_num_seqs=32).scheduler_config().max_num_seqs == 32


def test_infercept_swap_budget_hides_behind_one_full_iteration() -> None:
    """Item 2: infercept_swap's budget is the tokens whose one-way copy takes no longer than f(B), ~1,500 for GPT-J."""
    s = make("infercept_swap", swap_budget="overlap", cost_profile="gptj-6b-a100", budget=384)
    cost = PROFILES["gptj-6b-a100"]
    tokens = cost.iteration_time(384) / cost.swap_per_token
    assert 1400 < tokens < 1600
    assert s._swap_budgets() == (int(tokens // 4), int(tokens // 4))


def test_infercept_victim_loses_exactly_the_missing_page_from_its_tail() -> None:
    """Item 2: passive_discard_by_order swaps min(needed, held) blocks from the victim's tail; the victim keeps
    running."""
    s = make("infercept", num_pages=9, max_num_seqs=4, budget=64, num_host_pages=16, swap_budget="unlimited")
    early, late = plain("early", 16, 20, arrival=0.0), plain("late", 16, 20, arrival=1.0)
    s.add_request(early)
    s.add_request(late)
    while True:
        out = s.schedule()
        check_step(s, out)
        if out.swap_out:
            break
        s.update(out, fake_run(out))
    (copy,) = out.swap_out
    assert copy.req_id == "late" and copy.num_pages == 1
    assert late.status is RequestStatus.RUNNING and len(late.host_page_ids) == 1
    assert copy.page_ids[0] not in late.page_ids and late.page_ids  # the tail page left, the head stayed
    assert out.preempted_ids == []  # not sent back: it resumes once its tail is back


def test_whole_admission_reserves_the_prompt_and_runs_prompts_alone() -> None:
    """Item 3: vLLM 0.2 admits only when the whole prompt's pages are free, in prompt-only iterations."""
    s = make("vllm", num_pages=14, budget=8, admission="whole")  # 13 usable pages of 4 tokens
    first, big = plain("first", 20, 10, arrival=0.0), plain("big", 40, 10, arrival=1.0)
    s.add_request(first)
    out = s.schedule()
    assert [(c.req_id, c.num_new_tokens) for c in out.scheduled] == [("first", 20)]  # whole, past the token budget
    s.update(out, fake_run(out))
    s.add_request(big)  # needs 10 pages; 8 are free
    out = s.schedule()
    assert [c.req_id for c in out.scheduled] == ["first"] and big in s.waiting
    s.update(out, fake_run(out))
    s.add_request(small := plain("small", 8, 1, arrival=2.0))
    s.waiting.remove(big)  # leave room for a prompt that fits: its iteration runs no decode
    out = s.schedule()
    assert [c.req_id for c in out.scheduled] == ["small"] and small.status is RequestStatus.RUNNING


@pytest.mark.skipif(not DEFAULT_TRACES["multi"].is_file(), reason="needs the INFERCEPT traces in ../shared")
@pytest.mark.parametrize("policy", COMPARED)
def test_light_load_preempts_almost_nothing(policy: str) -> None:
    """Item 3: at 1 req/s nothing is short of memory for long, so no request is sent back more than once."""
    point = SimPoint("multi", 1.0, policy, window=60.0)
    engine = simulated_engine(PROFILES[point.profile], point.scheduler_config(), max_model_len=point.max_model_len)
    arrivals = poisson_arrivals(_trace_requests("multi", "made", 2048), 1.0, 60.0, seed=0)
    result = run_workload(engine, arrivals, progress=False)
    counts = [preemptions(o) for o in result.outputs]
    assert len(counts) == len(arrivals) and max(counts) <= 1 and sum(counts) <= 2


@pytest.mark.parametrize("decodes_first", [True, False])
def test_decodes_are_scheduled_before_prefill_chunks(decodes_first: bool) -> None:
    """Item 4: a long prefill chunk admitted earlier does not take the budget a later decode needs."""
    s = make("fcfs", budget=16, decodes_first=decodes_first)
    long, short = plain("long", 400, 5, arrival=0.0), plain("short", 4, 5, arrival=1.0)
    s.add_request(long)
    step(s)  # long takes 16 of its 400 prompt tokens
    s.add_request(short)
    s.waiting.remove(short)  # short runs behind long with one token to compute: a decode
    s.running.append(short)
    short.set_status(RequestStatus.RUNNING, 0.0)
    short.page_ids, short.num_computed_tokens = s.page_pool.allocate(1), 3
    out = s.schedule()
    check_step(s, out)
    assert [(c.req_id, c.num_new_tokens) for c in out.scheduled] == (
        [("short", 1), ("long", 15)] if decodes_first else [("long", 16)]
    )


def test_the_lamps_score_times_decodes_as_a_full_iteration_by_default() -> None:
    """Item 5: the LAMPS code's score uses a saturated iteration time (policy.py:34-45), not a one-token decode."""
    cost = PROFILES["gptj-6b-a100"]
    one, full = cost.iteration_time(1), cost.iteration_time(cost.token_budget)
    decode_only = {t: memory_time_score(100, 50, 0.0, 0, 0, "preserve", cost, step_time=t) for t in (one, full)}
    assert decode_only[full] == pytest.approx(decode_only[one] * full / one)
    saturated = make("lamps", score_step="saturated", cost_profile="gptj-6b-a100")
    single = make("lamps", score_step="single", cost_profile="gptj-6b-a100")
    assert saturated.policy.score_step_time == full and single.policy.score_step_time == one

"""The budget loop with a hand-checkable fake runner (no JAX)."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from lamps_jax.config import SchedulerConfig
from lamps_jax.paged_kv.page_pool import PagePool
from lamps_jax.request import Request, RequestStatus, SamplingParams
from lamps_jax.scheduler.output import RunnerOutput, SchedulerOutput
from lamps_jax.scheduler.scheduler import Scheduler


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t


def make_scheduler(
    num_pages: int = 64, page_size: int = 4, max_num_seqs: int = 8, budget: int = 16, max_model_len: int = 256
) -> Scheduler:
    return Scheduler(
        SchedulerConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=budget),
        PagePool(num_pages),
        page_size,
        max_model_len,
        FakeClock(),
    )


def make_request(req_id: str, prompt_len: int, max_tokens: int, arrival: float = 0.0) -> Request:
    return Request(
        req_id,
        list(range(1, prompt_len + 1)),
        SamplingParams(max_tokens=max_tokens),
        arrival,
        seed=0,
        eos_token_ids=(0,),
    )


def fake_run(sched_out: SchedulerOutput, token: int = 7) -> RunnerOutput:
    ids = [c.req_id for c in sched_out.scheduled if c.samples]
    return RunnerOutput(ids, [token] * len(ids), 0.0)


def check_step(s: Scheduler, out: SchedulerOutput) -> None:
    assert out.total_tokens <= s.config.max_step_tokens
    assert len(s.running) <= s.config.max_num_seqs
    ids = [c.req_id for c in out.scheduled]
    assert len(ids) == len(set(ids))
    assert not set(out.preempted_ids) & {copy.req_id for copy in out.swap_in}, "a request swapped in was preempted"
    held = Counter(p for r in s.requests.values() for p in r.page_ids)
    if s.config.enable_prefix_caching:  # requests share cached pages: each page counts its holders
        assert all(s.page_pool.ref_count(p) == n for p, n in held.items()), "a page's holders and references differ"
    else:
        assert all(n == 1 for n in held.values()), "a page is owned by two requests"
    assert len(held) + s.page_pool.num_free == s.page_pool.num_usable
    for chunk in out.scheduled:
        assert len(chunk.request.page_ids) * s.page_size >= chunk.num_computed_tokens + chunk.num_new_tokens
    s.page_pool.check_invariants()
    if s.host_pool is not None:  # host pages: one owner each; those read by this step's swap-ins are free again
        held = [p for r in s.requests.values() for p in r.host_page_ids]
        assert len(held) == len(set(held)), "a host page is owned by two requests"
        assert len(held) + s.host_pool.num_free == s.host_pool.num_usable


def run_to_completion(s: Scheduler, max_steps: int = 10_000) -> list[Request]:
    finished = []
    for _ in range(max_steps):
        if not s.has_unfinished():
            return finished
        out = s.schedule()
        check_step(s, out)
        finished += s.update(out, fake_run(out))
        s.clock.t += 0.01
    raise AssertionError("requests never finished")


def test_chunked_prefill_then_decode_within_budget() -> None:
    s = make_scheduler(budget=16)
    s.add_request(make_request("a", prompt_len=40, max_tokens=3))
    chunks = []
    while s.has_unfinished():
        out = s.schedule()
        chunks.append([(c.req_id, c.num_computed_tokens, c.num_new_tokens) for c in out.scheduled])
        s.update(out, fake_run(out))
    assert chunks == [[("a", 0, 16)], [("a", 16, 16)], [("a", 32, 8)], [("a", 40, 1)], [("a", 41, 1)]]


def test_running_requests_go_before_waiting_ones() -> None:
    s = make_scheduler(budget=10)
    s.add_request(make_request("a", 4, max_tokens=5))
    s.update(out := s.schedule(), fake_run(out))
    s.add_request(make_request("b", 30, max_tokens=5))
    out = s.schedule()
    assert [(c.req_id, c.num_new_tokens) for c in out.scheduled] == [("a", 1), ("b", 9)]


def test_preemption_frees_the_latest_arrival_and_recomputes_it() -> None:
    s = make_scheduler(num_pages=7, page_size=4, budget=64)  # 6 usable pages = 24 tokens
    s.add_request(make_request("early", 10, max_tokens=8, arrival=0.0))
    s.add_request(make_request("late", 10, max_tokens=8, arrival=1.0))
    preempted = []
    finished = []
    while s.has_unfinished():
        out = s.schedule()
        check_step(s, out)
        preempted += out.preempted_ids
        finished += s.update(out, fake_run(out))
    assert preempted and set(preempted) == {"late"}
    assert [r.req_id for r in finished] == ["early", "late"]
    assert all(len(r.output_token_ids) == 8 for r in finished)
    assert s.page_pool.num_free == s.page_pool.num_usable


def test_abort_frees_pages_of_running_and_waiting_requests() -> None:
    s = make_scheduler(max_num_seqs=1)
    s.add_request(make_request("run", 9, 5))
    s.add_request(make_request("wait", 9, 5))
    s.update(out := s.schedule(), fake_run(out))
    assert s.requests["run"].page_ids and not s.requests["wait"].page_ids
    for req_id in ("run", "wait"):
        assert s.finish_request(req_id, RequestStatus.FINISHED_ABORTED).status == RequestStatus.FINISHED_ABORTED
    assert s.finish_request("run", RequestStatus.FINISHED_ABORTED) is None
    assert not s.has_unfinished() and s.page_pool.num_free == s.page_pool.num_usable


def test_eos_and_length_stops() -> None:
    s = make_scheduler(num_pages=80)
    s.add_request(make_request("eos", 3, 10))
    out = s.schedule()
    (done,) = s.update(out, RunnerOutput(["eos"], [0], 0.0))
    assert done.status == RequestStatus.FINISHED_STOPPED and done.stop_reason == 0
    s.add_request(make_request("ctx", 250, 100))  # max_model_len 256 ends it first
    (done,) = run_to_completion(s)
    assert done.status == RequestStatus.FINISHED_LENGTH and done.num_tokens == 256


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), num_pages=st.integers(12, 80), budget=st.integers(1, 48))
def test_random_workloads_all_finish_without_leaks(seed: int, num_pages: int, budget: int) -> None:
    rng = random.Random(seed)
    s = make_scheduler(num_pages=num_pages, budget=budget, max_num_seqs=rng.randint(1, 8))
    requests = []
    for i in range(rng.randint(1, 25)):
        # every request fits the pool alone: (prompt + max_tokens) <= 4 * 11 tokens
        prompt_len, max_tokens = rng.randint(1, 30), rng.randint(1, 14)
        requests.append(make_request(str(i), prompt_len, max_tokens, arrival=float(i)))
        s.add_request(requests[-1])
    finished = run_to_completion(s)
    assert sorted(r.req_id for r in finished) == sorted(r.req_id for r in requests)
    assert all(len(r.output_token_ids) == r.sampling_params.max_tokens for r in finished)
    assert s.page_pool.num_free == s.page_pool.num_usable

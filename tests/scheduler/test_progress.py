"""Forward progress under memory pressure: a workload whose running requests cannot all fit still finishes."""

from __future__ import annotations

import pytest

from lamps_jax.bench.comparison import _scaled, exact_poisson_arrivals
from lamps_jax.config import SchedulerConfig
from lamps_jax.request import SamplingParams
from lamps_jax.scheduler.cost_model import load_cost_model
from lamps_jax.sim.engine import simulated_engine
from lamps_jax.workload.traces import DEFAULT_TRACES, load_trace


@pytest.mark.parametrize("policy", ["infercept", "infercept_swap", "lamps", "vllm"])
def test_requests_that_outgrow_the_kv_memory_together_all_finish(policy: str) -> None:
    """The scaled multi-API trace of ``make demo`` on 32 device pages: two requests that each needed one more
    page took turns evicting each other's tail to the host for ever under INFERCEPT (neither ever ran)."""
    requests = [_scaled(r, 96, 24, 0.02) for r in load_trace(DEFAULT_TRACES["multi"])]
    arrivals = exact_poisson_arrivals(requests, 1.0, 10, seed=0)
    config = SchedulerConfig(policy=policy, max_num_seqs=16, num_host_pages=256)
    engine = simulated_engine(load_cost_model("gptj-6b-a100"), config, kv_capacity_tokens=31 * 16, max_model_len=1024)
    for index, request in enumerate(arrivals):
        engine.add_request(
            [1 + index] * request.prompt_tokens,
            SamplingParams(ignore_eos=True),
            request.request_id,
            request.segments,
            arrival_time=request.arrival_time,
        )
    finished = []
    for _ in range(200_000):
        if not engine.has_unfinished_requests():
            break
        finished += engine.step()
        engine.wait_for_work()
    assert len(finished) == 10 and {o.finish_reason for o in finished} == {"stop"}
    assert engine.page_pool.num_free == engine.page_pool.num_usable

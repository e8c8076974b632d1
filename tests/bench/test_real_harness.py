"""The benchmark harness on the real engine (wall clock): arrivals, API calls, metrics."""

from __future__ import annotations

import dataclasses

from lamps_jax.bench.harness import run_workload
from lamps_jax.engine import LLMEngine
from tests.conftest import small_engine_config
from tests.sim.test_simulator import request


def test_real_engine_serves_a_timed_workload_with_api_calls(tiny_model) -> None:
    config = small_engine_config()
    config = dataclasses.replace(config, scheduler=dataclasses.replace(config.scheduler, policy="lamps"))
    engine = LLMEngine(tiny_model, config)
    workload = [
        request("a", 12, 4, ("qa", 0.05, 3), after=3, arrival=0.0),
        request("b", 30, 6, arrival=0.02),
        request("c", 8, 2, ("math", 0.0, 2), after=2, arrival=0.1),
    ]
    result = run_workload(engine, workload, progress=False)
    metrics = result.metrics()
    assert metrics["finished"] == 3 and metrics["errors"] == 0
    assert result.duration >= 0.1  # the last arrival is waited for on the wall clock
    by_id = {o.req_id: o for o in result.outputs}
    assert by_id["a"].num_api_calls == 1 and by_id["a"].num_generated_tokens == 7
    assert by_id["a"].latency >= 0.05  # includes the API call
    assert sum(result.strategy_counts.values()) == 2
    assert result.memory.used_pages[-1] == 0

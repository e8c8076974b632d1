"""The simulated engine: deterministic, and policy orderings that hold by construction."""

from __future__ import annotations

import dataclasses

import pytest

from lamps_jax.bench.harness import run_workload
from lamps_jax.config import SchedulerConfig
from lamps_jax.request import ApiCall, Segment
from lamps_jax.scheduler.cost_model import load_cost_model
from lamps_jax.sim.engine import simulated_engine
from lamps_jax.workload.spec import WorkloadRequest

COST = load_cost_model("gptj-6b-a100")


def request(
    req_id: str,
    prompt: int,
    decode: int,
    call: tuple[str, float, int] | None = None,
    after: int = 0,
    arrival: float = 0.0,
) -> WorkloadRequest:
    if call is None:
        return WorkloadRequest(req_id, (), prompt, (Segment(decode),), arrival)
    name, duration, returned = call
    first = Segment(decode, ApiCall(name, duration=duration, result_token_ids=(1,) * returned))
    return WorkloadRequest(req_id, (name,), prompt, (first, Segment(after)), arrival)


def simulate(policy: str, workload, capacity: int = 4096, **kwargs):
    engine = simulated_engine(COST, SchedulerConfig(policy=policy, **kwargs), kv_capacity_tokens=capacity)
    return run_workload(engine, workload, progress=False)


def mixed_workload(n: int = 40) -> list[WorkloadRequest]:
    out = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            out.append(request(str(i), 300, 40, ("chat", 2.0, 30), after=20, arrival=i * 0.05))
        elif kind == 1:
            out.append(request(str(i), 50, 10, ("math", 0.0001, 5), after=5, arrival=i * 0.05))
        else:
            out.append(request(str(i), 120, 60, arrival=i * 0.05))
    return out


@pytest.mark.parametrize("policy", ["vllm", "infercept", "sjf", "lamps", "lamps_no_rank"])
def test_simulation_is_deterministic_and_complete(policy: str) -> None:
    first = simulate(policy, mixed_workload(), num_host_pages=0 if policy != "infercept" else 1024)
    second = simulate(policy, mixed_workload(), num_host_pages=0 if policy != "infercept" else 1024)
    assert first.metrics() | {"wall_seconds": 0} == second.metrics() | {"wall_seconds": 0}
    assert first.metrics()["finished"] == 40
    engine_free = first.memory.used_pages[-1]
    assert engine_free == 0  # every page returned at the end


def test_memory_ranking_beats_fcfs_when_a_big_request_blocks_the_queue() -> None:
    """One request holding most of the KV memory arrives first; FCFS makes everyone wait behind it."""
    big = request("big", 3300, 150, arrival=0.0)
    small = [request(f"s{i}", 20, 20, arrival=0.0) for i in range(30)]
    results = {p: simulate(p, [big, *small], capacity=3460, max_num_seqs=64) for p in ("vllm", "sjf", "lamps")}
    e2e = {p: r.metrics()["e2e_mean"] for p, r in results.items()}
    ttft = {p: r.metrics()["ttft_mean"] for p, r in results.items()}
    assert e2e["lamps"] < 0.5 * e2e["vllm"] and ttft["lamps"] < 0.5 * ttft["vllm"], (e2e, ttft)
    assert e2e["sjf"] < 0.5 * e2e["vllm"]


def latencies(result, prefix: str) -> list[float]:
    return [o.latency for o in result.outputs if o.req_id.startswith(prefix)]


def test_lamps_discards_long_calls_and_frees_memory_for_others() -> None:
    """Long human-reply calls: holding their KV (preserve) blocks new requests; LAMPS does not."""
    chats = [request(f"c{i}", 400, 10, ("chat", 30.0, 20), after=10, arrival=0.0) for i in range(8)]
    later = [request(f"n{i}", 400, 30, arrival=1.0 + 0.01 * i) for i in range(8)]
    fcfs_preserve = simulate("fcfs", chats + later, capacity=3400, kv_strategy="preserve")
    lamps = simulate("lamps", chats + later, capacity=3400)
    assert lamps.strategy_counts.get("discard", 0) + lamps.strategy_counts.get("swap", 0) == 8
    assert max(latencies(lamps, "n")) < min(latencies(fcfs_preserve, "n"))


def test_virtual_time_jumps_over_idle_gaps() -> None:
    workload = [
        request("a", 10, 5, ("qa", 100.0, 3), after=5),
        dataclasses.replace(request("b", 10, 5), arrival_time=500.0),
    ]
    result = simulate("vllm", workload)
    assert result.duration >= 500.0 and result.iterations < 100


def test_preemptions_are_counted_when_growing_requests_overflow_the_kv_memory() -> None:
    """Two requests fit at admission (two pages each) but not once both have decoded 40 tokens."""
    workload = [request("a", 16, 40), request("b", 16, 40)]
    tight = simulate("fcfs", workload, capacity=64)  # four pages of 16 tokens
    assert tight.metrics()["preemptions"] >= 1 and tight.metrics()["finished"] == 2
    assert any(
        ("running", "waiting") in zip([s for s, _ in o.timeline], [s for s, _ in o.timeline[1:]]) for o in tight.outputs
    )
    assert simulate("fcfs", workload, capacity=4096).metrics()["preemptions"] == 0

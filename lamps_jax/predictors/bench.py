"""bench-length-predictor: what a learned head buys LAMPS in the simulator, and what the head costs per request.

Workload: requests built from the dataset's own (prompt, answer) records, so the true lengths are the
serving model's: a request is the prompt of record a, decodes a's answer length, makes one API call (drawn
from the multi-API trace's calls: type, duration, returned tokens), then decodes record b's answer length.
Arrivals are Poisson. LAMPS ranks with one of: ``oracle`` (true lengths), ``oracle-noise:0.3`` (the paper's
benchmark method), ``mean`` (the running mean, no per-request knowledge), and ``learned``: the head's
cross-validated prediction for a and b (predicted by a head fitted without their groups). The simulator has
no hidden states, so the learned predictions are posted ahead, as if the head ran at arrival (the paper's
separate predictor does); in the real engine the first segment's prediction arrives after the prompt's
prefill, and the policy re-plans the request then.

Cost: the head's forward on the host CPU per hidden state (the engine's path: one jitted call per
prediction), and per request within a batch of 32; the median over repeated calls, in microseconds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from lamps_jax.bench.harness import run_workload
from lamps_jax.config import SchedulerConfig
from lamps_jax.predictors.checkpoint import load_head, read_meta
from lamps_jax.predictors.dataset import LengthDataset
from lamps_jax.predictors.report import cross_validate, head_name
from lamps_jax.predictors.serving import HostLengthHead
from lamps_jax.predictors.train import TrainConfig
from lamps_jax.scheduler.cost_model import load_cost_model
from lamps_jax.scheduler.predictors import PostedLengthPredictor
from lamps_jax.sim.engine import simulated_engine
from lamps_jax.workload.arrivals import poisson_arrivals
from lamps_jax.workload.spec import CallSpec, WorkloadRequest, build_request
from lamps_jax.workload.traces import TRACE_FILES, load_trace, traces_dir

PREDICTORS = ("oracle", "oracle-noise:0.3", "mean", "learned")
NUM_BASE_REQUESTS = 2000  # (record a, call, record b) combinations arrivals are drawn from
COST_REPEATS = 2000


def head_cost_us(head: HostLengthHead, hidden: np.ndarray) -> dict[str, float]:
    """Median microseconds of the head's forward: one hidden state per call, and per request in a batch of 32."""
    single = []
    for i in range(COST_REPEATS):
        start = time.perf_counter()
        head.predict(hidden[i % len(hidden)])
        single.append(time.perf_counter() - start)
    rows = np.resize(hidden, (32, hidden.shape[1]))
    batched = []
    for _ in range(COST_REPEATS // 10):
        start = time.perf_counter()
        np.asarray(head.predict_batch(rows))
        batched.append((time.perf_counter() - start) / len(rows))
    return {
        "per_call_us": 1e6 * float(np.median(single[100:])),  # after warm-up (the first call compiles)
        "per_request_batch32_us": 1e6 * float(np.median(batched[10:])),
    }


def base_requests(data: LengthDataset, seed: int) -> tuple[list[WorkloadRequest], dict[str, tuple[int, int]]]:
    calls = [c for r in load_trace(traces_dir() / TRACE_FILES["multi"]) for c in _calls(r)]
    rng = np.random.default_rng(seed)
    requests, records = [], {}
    for k in range(NUM_BASE_REQUESTS):
        a, b = (int(x) for x in rng.integers(len(data), size=2))
        call = calls[int(rng.integers(len(calls)))]
        request_id = f"{k}:{a}:{b}"
        decode = [max(1, int(data.lengths[a])), max(1, int(data.lengths[b]))]
        requests.append(build_request(request_id, max(1, int(data.prompt_tokens[a])), decode, [call]))
        records[request_id] = (a, b)
    return requests, records


def _calls(request: WorkloadRequest) -> list[CallSpec]:
    return [
        CallSpec(s.api_call.name, s.api_call.duration, len(s.api_call.result_token_ids))
        for s in request.segments
        if s.api_call is not None
    ]


def simulate(
    requests: list[WorkloadRequest],
    records: dict[str, tuple[int, int]],
    predicted: np.ndarray,
    predictor: str,
    rate: float,
    window: float,
    seed: int,
    profile: str,
) -> dict[str, float]:
    spec = "mean" if predictor == "learned" else predictor
    engine = simulated_engine(
        load_cost_model(profile), SchedulerConfig(policy="lamps", length_predictor=spec, predictor_seed=seed)
    )
    arrivals = poisson_arrivals(requests, rate, window, seed)
    if predictor == "learned":  # posted ahead: the simulator has no hidden states to run the head on
        posted = PostedLengthPredictor(prior=float(predicted.mean()))
        for arrival in arrivals:
            a, b = records[arrival.request_id.split("-", 1)[1]]
            posted.post(f"{arrival.request_id}:0", predicted[a])
            posted.post(f"{arrival.request_id}:1", predicted[b])
        engine.scheduler.policy.lengths = engine.segment_lengths.lengths = posted
    metrics = run_workload(engine, arrivals, window=window, progress=False).metrics()
    return {k: metrics[k] for k in ("e2e_mean", "e2e_p99", "ttft_mean", "ttft_p99", "completed") if k in metrics}


def run_benchmark(
    dataset_stem: Path, head_path: Path, rates: list[float], seeds: list[int], window: float, profile: str, output: Path
) -> dict:
    data = LengthDataset.load(dataset_stem)
    meta = read_meta(head_path)
    head = HostLengthHead(load_head(head_path))
    cost = head_cost_us(head, data.hidden)
    config = TrainConfig(**meta["summary"]["train_config"])
    spec = head.spec
    predicted, _, _ = cross_validate(data, [spec], config, folds=5, validation=0.2)
    held_out = predicted[head_name(spec)]
    requests, records = base_requests(data, seed=0)
    rows = []
    points = [(rate, predictor, seed) for rate in rates for predictor in PREDICTORS for seed in seeds]
    for rate, predictor, seed in tqdm(points, desc="bench-length-predictor", unit="run"):
        metrics = simulate(requests, records, held_out, predictor, rate, window, seed, profile)
        rows.append({"rate": rate, "predictor": predictor, "seed": seed} | metrics)
    table = _table(rows, rates, seeds, window, profile, len(data))
    cost_line = (
        f"Head cost ({head_name(spec)}, host CPU, median of {COST_REPEATS} calls): "
        f"{cost['per_call_us']:.1f} µs per prediction (one call), "
        f"{cost['per_request_batch32_us']:.2f} µs per request in a batch of 32"
    )
    print(table + "\n" + cost_line)
    output.mkdir(parents=True, exist_ok=True)
    (output / "simulation.md").write_text(table + "\n" + cost_line + "\n")
    report = {
        "rows": rows,
        "head_cost": cost,
        "head": head_name(spec),
        "dataset": str(dataset_stem),
        "profile": profile,
    }
    (output / "simulation.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {output / 'simulation.md'} and {output / 'simulation.json'}")
    return report


def _table(
    rows: list[dict], rates: list[float], seeds: list[int], window: float, profile: str, num_records: int
) -> str:
    lines = [
        f"LAMPS in the simulator ({profile} cost profile, {window:.0f} s of Poisson arrivals, mean over seeds "
        f"{','.join(map(str, seeds))}) on requests built from {num_records} SmolLM2 answers (record a, one call of "
        "the multi-API trace, record b), by length predictor; E2E and TTFT in seconds",
        "",
        "| rate (req/s) | predictor | E2E mean | E2E p99 | TTFT mean | TTFT p99 |",
        "|---|---|---|---|---|---|",
    ]
    for rate in rates:
        for predictor in PREDICTORS:
            sel = [r for r in rows if r["rate"] == rate and r["predictor"] == predictor]
            mean = {k: float(np.mean([r[k] for r in sel])) for k in ("e2e_mean", "e2e_p99", "ttft_mean", "ttft_p99")}
            lines.append(
                f"| {rate:g} | {predictor} | {mean['e2e_mean']:.2f} | {mean['e2e_p99']:.2f} | "
                f"{mean['ttft_mean']:.2f} | {mean['ttft_p99']:.2f} |"
            )
    return "\n".join(lines) + "\n"

"""Where a decode step's wall time goes: host work the device waits for, against the device's own time.

What the engine issue's levers 3 (a persistent input batch), 4 (dispatching step N+1 before reading step N's
tokens) and 7 (fewer arguments per call) could save at most is the host part of a step: the scheduler and the
output update, building the padded arrays, and dispatching the call. This runs SmolLM2 decode steps at a few batch
sizes (prompts prefilled first, then only decode steps timed) and splits each step's wall time into:

- arrays: building the call's padded numpy arrays (`JaxRunner._pad_arrays`);
- dispatch: the executable call until it returns (JAX dispatches asynchronously: what is done before it returns,
  argument handling and the donated KV pages among it);
- device wait: from then until the sampled tokens are on the host (the step's compute, less what dispatch overlapped);
- engine: the rest of `LLMEngine.step` (scheduling, appending tokens, outputs).

Then it runs the same batch's step executable on its own, without the engine, two ways: "serial" (each step's tokens
read back before the next is dispatched, as the engine does) and "pipelined" (step N+1 dispatched with step N's
tokens still on the device, before step N's are read: lever 4 with no host work left). Both repeat one position (the
same pages; a step's cost does not depend on the token values). The gap from the engine's step to "pipelined" is
the most lever 4 with a persistent batch could save.

python scripts/bench_step_host.py [--dtype int8] [--batch-sizes 1,8,32] [--steps 40]

Prints a captioned Markdown table (ms per step, medians); ``--output FILE`` also writes it there.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from pathlib import Path

import jax
import numpy as np

from lamps_jax.bench.decode_throughput import _build_engine, prompt_token_ids
from lamps_jax.bench.report import print_table
from lamps_jax.model.registry import load_model
from lamps_jax.request import SamplingParams


def _timed(store: dict[str, float], name: str, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            store[name] += time.perf_counter() - start

    return wrapper


def executable_loop(runner, arrays, steps: int, pipelined: bool) -> float:
    """ms per step of the runner's step executable alone, repeated ``steps`` times on one batch's arrays."""
    inputs, sampling = arrays
    call = runner._executables.ready[inputs.token_ids.shape]
    tokens = jax.device_put(inputs.token_ids[:, 0], runner.device)
    start = time.perf_counter()
    for _ in range(steps):
        fed = dataclasses.replace(inputs, token_ids=tokens[:, None] if pipelined else np.asarray(tokens)[:, None])
        tokens, _, runner.kv.k, runner.kv.v = call(runner.params, runner.kv.k, runner.kv.v, fed, sampling)
        if not pipelined:
            tokens = jax.device_get(tokens)
    jax.block_until_ready(tokens)
    return 1e3 * (time.perf_counter() - start) / steps


def measure(model, batch: int, steps: int) -> dict[str, float]:
    """Median ms per decode step of each part, over ``steps`` decode steps of ``batch`` requests."""
    engine = _build_engine(model, batch, 64 + steps + 8)
    prompts = prompt_token_ids(model.tokenizer, batch)
    for prompt in prompts:
        engine.add_request(prompt, SamplingParams(max_tokens=steps + 4, ignore_eos=True))
    while any(r.num_generated_tokens == 0 for r in engine.scheduler.running) or engine.scheduler.waiting:
        engine.step()  # prefill until every request decodes
    runner = engine.runner
    parts: dict[str, float] = {}
    runner._pad_arrays = _timed(parts, "arrays", runner._pad_arrays)
    calls = []
    runner._call = _timed(parts, "dispatch", lambda arrays, call=runner._call: calls.append(arrays) or call(arrays))
    device_get = jax.device_get
    rows = []
    try:
        jax.device_get = _timed(parts, "device wait", device_get)
        for _ in range(steps):
            parts.update({"arrays": 0.0, "dispatch": 0.0, "device wait": 0.0})
            start = time.perf_counter()
            engine.step()
            total = time.perf_counter() - start
            rows.append({**parts, "engine": total - sum(parts.values()), "step": total})
    finally:
        jax.device_get = device_get
    ms = {name: 1e3 * statistics.median(row[name] for row in rows) for name in rows[0]}
    for mode in ("serial", "pipelined"):
        ms[mode] = executable_loop(runner, calls[-1], steps, pipelined=mode == "pipelined")
    return ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtype", default="int8")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--steps", type=int, default=40, help="decode steps timed per batch size")
    parser.add_argument("--output", type=Path, help="also write the Markdown table to this file")
    args = parser.parse_args()
    model = load_model(args.model, dtype=args.dtype)
    load = os.getloadavg()[0]
    lines = [
        f"Decode steps of {args.model} ({args.dtype}) on {os.cpu_count()} CPU cores, 1-minute load {load:.1f} at the "
        f"start: median ms per step over {args.steps} steps per batch size (the engine setting of bench-engine). "
        "host = arrays + dispatch + engine: the most that overlapping or cheaper input building could save. serial, "
        "pipelined: the batch's step executable alone, each step's tokens read back before the next call, or the next "
        "call fed with them on the device (ms per step, mean).",
        "",
        "| batch | step ms | device wait | arrays | dispatch | engine | host share | serial | pipelined |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        ms = measure(model, batch, args.steps)
        host = ms["arrays"] + ms["dispatch"] + ms["engine"]
        lines.append(
            f"| {batch} | {ms['step']:.2f} | {ms['device wait']:.2f} | {ms['arrays']:.2f} | {ms['dispatch']:.2f} | "
            f"{ms['engine']:.2f} | {100 * host / ms['step']:.0f}% | {ms['serial']:.2f} | {ms['pipelined']:.2f} |"
        )
        print(lines[-1], flush=True)
    print_table(lines, args.output)


if __name__ == "__main__":
    main()

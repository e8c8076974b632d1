"""Swap throughput (device <-> host KV pages) against plain copies of the same bytes, in one run.

For each page count: the engine's swap-out (gather, copy to host memory, landed in the host page
store) and swap-in (host pages copied back and scattered into the page arrays) in GB/s, next to
``np.copy`` and a bare host->device copy of the same number of bytes. Then the step-time overhead
of swaps in flight, issued through the runner as the engine issues them: a decode step alone, the
swaps alone, and both together; overlap = how much of the swap time was hidden.
Results: a console table and ``swap_throughput.{json,md}`` in the output directory.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from rich.console import Console
from rich.table import Table

from lamps_jax.bench.wording import plural, print_written
from lamps_jax.config import CacheConfig, EngineConfig, SchedulerConfig
from lamps_jax.model.registry import load_model
from lamps_jax.paged_kv.kv_cache import KVPages
from lamps_jax.paged_kv.swap import HostSwapper
from lamps_jax.request import Request, SamplingParams
from lamps_jax.runner import JaxRunner
from lamps_jax.scheduler.output import ScheduledChunk, SchedulerOutput, SwapCopy


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _decode_batch(runner: JaxRunner, batch: int, context: int, first_page: int) -> SchedulerOutput:
    pages_per_seq = -(-(context + 1) // runner.kv.k[0].shape[2])
    chunks = []
    for i in range(batch):
        request = Request(str(i), [1] * context, SamplingParams(), 0.0, seed=0)
        request.output_token_ids.append(1)
        request.page_ids = list(range(first_page + i * pages_per_seq, first_page + (i + 1) * pages_per_seq))
        request.num_computed_tokens = context
        chunks.append(ScheduledChunk.of(request, 1))
    return SchedulerOutput(chunks)


def _throughput_row(swapper: HostSwapper, kv: KVPages, count: int, repeats: int) -> dict:
    """GB/s of swapping ``count`` pages each way, and of plain copies of the same bytes."""
    source = list(range(1, count + 1))
    target = list(range(count + 1, 2 * count + 1))
    host_pages = list(range(1, count + 1))
    store = swapper.store_k[swapper.devices[0]]  # one device: its store holds every kv head
    nbytes = count * store[0].nbytes * 2  # K and V of the real pages
    as_numpy = np.copy(store[1 : count + 1])

    def swap_out() -> None:
        swapper.swap_out(kv, source, host_pages)
        swapper.flush()

    times = {
        "swap_out": _median_seconds(swap_out, repeats),
        "swap_in": _median_seconds(lambda: (swapper.swap_in(kv, host_pages, target), kv.k)[1], repeats),
        "np.copy": _median_seconds(lambda: (np.copy(as_numpy), np.copy(as_numpy)), repeats),
        "device_put": _median_seconds(lambda: jax.device_put(as_numpy, swapper.devices[0]), repeats),
    }
    # np.copy runs twice over K (= nbytes); the bare device_put moves K only (nbytes / 2).
    moved = {"swap_out": nbytes, "swap_in": nbytes, "np.copy": nbytes, "device_put": nbytes // 2}
    return {"pages": count, "mib": nbytes / 2**20} | {k: moved[k] / t / 1e9 for k, t in times.items()}


def run_swap_benchmark(model: str, page_counts: list[int], repeats: int, output_dir: Path) -> dict:
    console = Console()
    loaded = load_model(model)
    max_pages = max(page_counts)
    batch, context = 8, 128
    num_pages = 2 * max_pages + batch * (context // 16 + 2) + 2
    config = EngineConfig(
        cache=CacheConfig(page_size=16, num_pages=num_pages),
        scheduler=SchedulerConfig(max_num_seqs=batch, max_num_batched_tokens=64, num_host_pages=2 * max_pages),
        max_model_len=max(2048, max_pages * 16),
    )
    runner = JaxRunner(loaded.config, loaded.params, config, num_pages, config.max_model_len)
    runner.warmup()
    swapper, kv = runner.swapper, runner.kv
    rows = [_throughput_row(swapper, kv, count, repeats) for count in page_counts]

    step_out = _decode_batch(runner, batch, context, first_page=2 * max_pages + 1)
    source, target = list(range(1, max_pages + 1)), list(range(max_pages + 1, 2 * max_pages + 1))
    copies = {  # through the runner, as the engine issues them: out of and into distinct host pages
        "swap_out": [SwapCopy("out", source, list(range(max_pages + 1, 2 * max_pages + 1)))],
        "swap_in": [SwapCopy("in", target, list(range(1, max_pages + 1)))],
    }

    def swaps():
        runner.execute(SchedulerOutput([], **copies))
        swapper.flush()
        return kv.k

    def step_with_swaps():
        runner.execute(SchedulerOutput(step_out.scheduled, **copies))
        swapper.flush()
        return kv.k

    step_alone = _median_seconds(lambda: runner.execute(step_out), repeats)
    swaps_alone = _median_seconds(swaps, repeats)
    together = _median_seconds(step_with_swaps, repeats)
    overlap = max(0.0, min(1.0, (step_alone + swaps_alone - together) / swaps_alone))
    overhead = {
        "decode_batch": batch,
        "context": context,
        "swap_pages_each_way": max_pages,
        "step_ms": step_alone * 1e3,
        "swaps_ms": swaps_alone * 1e3,
        "step_with_swaps_ms": together * 1e3,
        "overlap_fraction": overlap,
    }

    title = f"Swap throughput, {model} KV pages of 16 tokens, GB/s (median of {plural(repeats, 'run')})"
    table = Table(title=title)
    for column in rows[0]:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(str(row["pages"]), f"{row['mib']:.1f}", *(f"{row[k]:.2f}" for k in list(row)[2:]))
    console.print(table)
    console.print(
        f"decode step (batch {batch}, context {context}): {overhead['step_ms']:.1f} ms alone; swaps of "
        f"{plural(max_pages, 'page')} out + in: {overhead['swaps_ms']:.1f} ms alone; "
        f"together {overhead['step_with_swaps_ms']:.1f} ms "
        f"(overlap {overlap:.0%}) on {jax.devices()[0].platform}"
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    result = {"model": model, "device": str(jax.devices()[0]), "throughput_gbps": rows, "step_overhead": overhead}
    paths = [output_dir / "swap_throughput.json", output_dir / "swap_throughput.md"]
    paths[0].write_text(json.dumps(result, indent=2) + "\n")
    header = "| " + " | ".join(rows[0]) + " |\n|" + "---:|" * len(rows[0]) + "\n"
    body = "".join(
        "| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in r.values()) + " |\n" for r in rows
    )
    caption = f"{title}: the engine's swap-out and swap-in, and np.copy / device_put of the same bytes.\n\n"
    paths[1].write_text(caption + header + body)
    print_written(paths)
    return result

"""On-device calibration of the cost model: times the real runner and fits f and g.

Builds an ``LLMEngine`` over ``model`` and times ``runner.execute`` on hand-built batches: decode
batches (1..32 rows at contexts 16..512) and prefill chunks (16..B tokens, from position 0 and over
a cached prefix), then one-way swaps of 1..64 pages. Fits f = a·new + b·context + c (``fit_plane``)
and g = a_s·t + b_s (``fit_linear``). The KV capacity is what the device memory JAX reports
(``bytes_limit``) holds once the weights are in it (``kv_capacity_tokens``); a device that reports
none (the CPU) leaves it unset, and ``bench`` then needs ``--kv-tokens``. Returns the ``CostModel``
and a report (fits, r2, raw points); into the output folder go ``<platform>-<model>.json``, the cost
model (what ``load_cost_model`` and ``bench --profile`` read), and ``<platform>-<model>.report.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path

import jax
from rich.console import Console
from rich.table import Table

from lamps_jax.bench.swap_throughput import _decode_batch, _median_seconds
from lamps_jax.bench.wording import print_written
from lamps_jax.config import CacheConfig, EngineConfig, ModelConfig, SchedulerConfig
from lamps_jax.engine import LLMEngine
from lamps_jax.model.registry import load_model
from lamps_jax.paged_kv.swap import HostSwapper
from lamps_jax.request import Request, SamplingParams
from lamps_jax.runner import JaxRunner
from lamps_jax.scheduler.cost_model import CostModel, fit_linear, fit_plane
from lamps_jax.scheduler.output import ScheduledChunk, SchedulerOutput
from lamps_jax.sim.capacity import kv_capacity_tokens

PAGE_SIZE = 16
MAX_MODEL_LEN = 1024
DECODE_BATCHES = (1, 2, 4, 8, 16, 32)  # powers of two: the runner pads rows to these buckets anyway
DECODE_CONTEXTS = (16, 64, 128, 256, 512)
PREFILL_SIZES = (16, 32, 64, 128, 256, 384, 512)  # those up to the token budget are timed
PREFILL_STARTS = (0, 256)  # a chunk from scratch, and one over a cached prefix
SWAP_PAGES = (1, 2, 4, 8, 16, 32, 64)


def _engine_config(token_budget: int) -> EngineConfig:
    max_seqs = max(DECODE_BATCHES)
    num_pages = 1 + max_seqs * -(-(max(DECODE_CONTEXTS) + 1) // PAGE_SIZE)  # page 0 + every decode row's own pages
    scheduler = SchedulerConfig(
        max_num_seqs=max_seqs, max_num_batched_tokens=token_budget, num_host_pages=max(SWAP_PAGES)
    )
    return EngineConfig(
        cache=CacheConfig(page_size=PAGE_SIZE, num_pages=num_pages), scheduler=scheduler, max_model_len=MAX_MODEL_LEN
    )


def _prefill_chunk(num_tokens: int, start: int) -> SchedulerOutput:
    """One request computing ``num_tokens`` prompt tokens after ``start`` cached ones (pages 1, 2, ...)."""
    request = Request("prefill", [1] * (start + num_tokens), SamplingParams(), 0.0, seed=0)
    request.page_ids = list(range(1, 1 + -(-(start + num_tokens) // PAGE_SIZE)))
    request.num_computed_tokens = start
    return SchedulerOutput([ScheduledChunk.of(request, num_tokens)])


def _time_step(runner: JaxRunner, step: SchedulerOutput, repeats: int) -> float:
    return _median_seconds(lambda: runner.execute(step), repeats)


def _iteration_points(runner: JaxRunner, token_budget: int, repeats: int) -> list[dict]:
    """Median seconds of one ``execute`` at each (new tokens, cached context tokens) point."""
    points = []
    for batch in DECODE_BATCHES:
        for context in DECODE_CONTEXTS:
            seconds = _time_step(runner, _decode_batch(runner, batch, context, first_page=1), repeats)
            points.append(
                {"kind": "decode", "num_tokens": batch, "context_tokens": batch * context, "seconds": seconds}
            )
    for start in PREFILL_STARTS:
        for size in (s for s in PREFILL_SIZES if s <= token_budget):
            seconds = _time_step(runner, _prefill_chunk(size, start), repeats)
            points.append({"kind": "prefill", "num_tokens": size, "context_tokens": start, "seconds": seconds})
    return points


def _swap_times(runner: JaxRunner, swapper: HostSwapper, num_pages: int, repeats: int) -> tuple[float, float]:
    """Median seconds of swapping ``num_pages`` pages out to host pages (landed in the store), and of
    swapping them back into other device pages."""
    source, target = list(range(1, num_pages + 1)), list(range(num_pages + 1, 2 * num_pages + 1))
    host_pages = list(range(1, num_pages + 1))

    def swap_out() -> None:
        swapper.swap_out(runner.kv, source, host_pages)
        swapper.flush()

    def swap_in() -> tuple:
        swapper.swap_in(runner.kv, host_pages, target)
        return runner.kv.k, runner.kv.v

    return _median_seconds(swap_out, repeats), _median_seconds(swap_in, repeats)


def _swap_points(runner: JaxRunner, swapper: HostSwapper, repeats: int) -> list[dict]:
    points = []
    for count in SWAP_PAGES:
        out_s, in_s = _swap_times(runner, swapper, count, repeats)
        points.append({"pages": count, "tokens": count * PAGE_SIZE, "swap_out_s": out_s, "swap_in_s": in_s})
    return points


def _swap_budget(cost: CostModel) -> int | None:
    """Tokens whose one-way swap fits in one decode iteration at the median batch and context of the grid."""
    if cost.swap_per_token == 0:
        return None
    batch, context = statistics.median_low(DECODE_BATCHES), statistics.median_low(DECODE_CONTEXTS)
    iteration = cost.iteration_time(batch, batch * context)
    return max(0, math.floor((iteration - cost.swap_base) / cost.swap_per_token))


def _print_summary(console: Console, cost: CostModel, report: dict) -> None:
    table = Table(title=f"Cost model {cost.name} ({report['device']})")
    table.add_column("term")
    table.add_column("value", justify="right")
    table.add_row("a  (ms / new token)", f"{cost.iter_per_token * 1e3:.5f}")
    table.add_row("b  (ms / context token)", f"{cost.iter_per_context_token * 1e3:.6f}")
    table.add_row("c  (ms / iteration)", f"{cost.iter_base * 1e3:.3f}")
    table.add_row("f fit r2", f"{report['iteration_fit']['r2']:.4f}")
    table.add_row("a_s (ms / token, one way)", f"{cost.swap_per_token * 1e3:.6f}")
    table.add_row("b_s (ms / swap)", f"{cost.swap_base * 1e3:.4f}")
    table.add_row("g fit r2", f"{report['swap_fit']['r2']:.4f}")
    table.add_row("token budget B", str(cost.token_budget))
    table.add_row("swap budget (tokens / iteration)", str(cost.swap_budget_tokens))
    table.add_row("KV capacity (tokens)", str(cost.kv_capacity_tokens or "unknown"))
    console.print(table)


def device_memory_bytes(device: jax.Device) -> int | None:
    """The memory JAX may use on ``device``, or None where it reports none (the CPU)."""
    stats = device.memory_stats()
    return stats.get("bytes_limit") if stats else None


def device_kv_capacity(model: ModelConfig, device_bytes: int | None) -> int | None:
    """KV tokens that ``device_bytes`` hold next to the model's weights; None for an unknown memory."""
    return None if device_bytes is None else kv_capacity_tokens(model, device_bytes)


def profile_stem(platform: str, model: str) -> str:
    """``<platform>-<model>``: the calibrated device and model, e.g. ``gpu-smollm2-135m``."""
    return f"{platform}-{Path(model).stem}"


def write_profile(cost: CostModel, report: dict, output_dir: Path, stem: str) -> list[Path]:
    """Writes ``<stem>.json`` (the cost model) and ``<stem>.report.json`` into ``output_dir``; returns both paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    profile, report_path = output_dir / f"{stem}.json", output_dir / f"{stem}.report.json"
    cost.save(profile)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    return [profile, report_path]


def calibrate(model: str = "tiny", output_dir: Path | None = None, repeats: int = 3) -> tuple[CostModel, dict]:
    """Measures f and g of ``model`` on this device; returns the cost model and a report of the fits.

    Negative fitted coefficients (noise around a term that does not matter on this device) are
    clipped to 0 in the cost model; the report keeps the raw fits. Given ``output_dir``, writes
    ``<platform>-<model>.json`` and its report there and prints their paths.
    """
    token_budget = SchedulerConfig().max_num_batched_tokens
    loaded = load_model(model)
    runner = LLMEngine(loaded, _engine_config(token_budget)).runner
    iteration_points = _iteration_points(runner, token_budget, repeats)
    swap_points = _swap_points(runner, runner.swapper, repeats)

    a, b, c, f_r2 = fit_plane([(p["num_tokens"], p["context_tokens"], p["seconds"]) for p in iteration_points])
    one_way = [(p["swap_out_s"] + p["swap_in_s"]) / 2 for p in swap_points]
    slope, intercept, g_r2 = fit_linear([p["tokens"] for p in swap_points], one_way)
    device = jax.devices()[0]
    memory = device_memory_bytes(device)
    cost = CostModel(
        name=f"calibrated-{Path(model).name}-{device.platform}",
        iter_per_token=max(a, 0.0),
        iter_per_context_token=max(b, 0.0),
        iter_base=max(c, 0.0),
        swap_per_token=max(slope, 0.0),
        swap_base=max(intercept, 0.0),
        token_budget=token_budget,
        swap_budget_tokens=None,
        kv_bytes_per_token=loaded.config.kv_bytes_per_token,
        kv_capacity_tokens=device_kv_capacity(loaded.config, memory),
    )
    cost = dataclasses.replace(cost, swap_budget_tokens=_swap_budget(cost))
    report = {
        "model": model,
        "device": str(device),
        "device_memory_bytes": memory,
        "repeats": repeats,
        "iteration_fit": {"a": a, "b": b, "c": c, "r2": f_r2},
        "swap_fit": {"a_s": slope, "b_s": intercept, "r2": g_r2, "one_way": "mean of swap-out and swap-in"},
        "iteration_points": iteration_points,
        "swap_points": swap_points,
        "cost_model": cost.to_dict(),
    }
    console = Console()
    _print_summary(console, cost, report)
    if cost.kv_capacity_tokens is None:
        console.print(f"KV capacity unknown ({device.platform} reports no memory size): bench it with --kv-tokens")
    if output_dir is not None:
        print_written(write_profile(cost, report, Path(output_dir), profile_stem(device.platform, model)))
    return cost, report

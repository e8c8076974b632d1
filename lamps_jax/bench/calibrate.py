"""On-device calibration of the cost model: times the real runner and fits f and g.

Builds an ``LLMEngine`` over ``model`` (in ``dtype``) and times ``runner.execute`` on hand-built batches: decode
batches (1..32 rows at contexts 16..512) and prefill chunks (16..B tokens, from position 0 and over a cached
prefix), then one-way swaps of 1..64 pages. Fits f = a·new + b·context + c (``fit_plane``) and g = a_s·t + b_s
(``fit_linear``). Each step is also set against its roofline on this device (``measure_device_peaks``: the larger
of reading the weights and the KV it attends over, and 2 x parameters FLOPs per token). The KV budget is
``kv_memory_bytes`` when given, else what the device memory JAX reports (``bytes_limit``) holds once the weights
are in it (``kv_capacity_tokens``); a device that reports none (the CPU) leaves it unset, and ``bench`` then
needs ``--kv-tokens``. Writes the cost model (``<stem>.json``: what ``load_cost_model`` and ``bench --profile``
read) and the device profile beside it (``<stem>.report.json``: identity, model, dtype, KV budget, roofline
fractions, fits and raw points; see ``device_profile``).
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

from lamps_jax.bench.device_profile import (
    DevicePeaks,
    device_identity,
    device_slug,
    measure_device_peaks,
    profile_paths,
)
from lamps_jax.bench.swap_throughput import _decode_batch, _median_seconds
from lamps_jax.bench.wording import print_written
from lamps_jax.config import QUANTIZED_DTYPES, CacheConfig, EngineConfig, ModelConfig, SchedulerConfig
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
    decode_pages = max_seqs * -(-(max(DECODE_CONTEXTS) + 1) // PAGE_SIZE)  # every decode row's own pages
    prefill_pages = -(-(max(PREFILL_STARTS) + token_budget) // PAGE_SIZE)  # the longest prefill chunk's, from page 1
    num_pages = 1 + max(decode_pages, prefill_pages)  # and page 0
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


def _roofline_fractions(points: list[dict], peaks: DevicePeaks, weight_bytes: int, parameters: int, kv_bytes: int):
    """Adds each point's ``roofline_fraction`` (roofline time / measured time) and returns the mean and best per
    kind (decode, prefill). A step's roofline: max(reading the weights and the ``context_tokens``' K and V once,
    2 x parameters FLOPs per new token)."""
    for point in points:
        read = (weight_bytes + point["context_tokens"] * kv_bytes) / peaks.bandwidth
        compute = 2 * parameters * point["num_tokens"] / peaks.flops
        point["roofline_fraction"] = max(read, compute) / point["seconds"]
    summary = {}
    for kind in ("decode", "prefill"):
        fractions = [p["roofline_fraction"] for p in points if p["kind"] == kind]
        if fractions:
            summary[kind] = {"mean": statistics.fmean(fractions), "best": max(fractions), "points": len(fractions)}
    return summary


def _print_summary(console: Console, cost: CostModel, report: dict) -> None:
    device = report["device"]
    table = Table(title=f"Cost model {cost.name} ({device['device_kind']}, {report['dtype']})")
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
    for kind, fraction in report["roofline"]["fractions"].items():
        table.add_row(f"{kind} of roofline (mean / best)", f"{fraction['mean']:.1%} / {fraction['best']:.1%}")
    console.print(table)


def device_memory_bytes(device: jax.Device) -> int | None:
    """The memory JAX may use on ``device``, or None where it reports none (the CPU)."""
    stats = device.memory_stats()
    return stats.get("bytes_limit") if stats else None


def device_kv_capacity(model: ModelConfig, device_bytes: int | None) -> int | None:
    """KV tokens that ``device_bytes`` hold next to the model's weights; None for an unknown memory."""
    return None if device_bytes is None else kv_capacity_tokens(model, device_bytes)


def kv_budget(model: ModelConfig, device_bytes: int | None, kv_memory_bytes: int | None) -> dict:
    """The profile's KV capacity in tokens and where it comes from: ``kv_memory_bytes`` given for the KV pages,
    else the device memory (90% of it less the weights), else unknown."""
    if kv_memory_bytes is not None:
        if kv_memory_bytes < model.kv_bytes_per_token:
            raise ValueError(f"the KV memory ({kv_memory_bytes} bytes) holds less than one token's K and V")
        tokens, source = kv_memory_bytes // model.kv_bytes_per_token, f"{kv_memory_bytes} bytes given for KV pages"
    elif device_bytes is not None:
        tokens, source = device_kv_capacity(model, device_bytes), "90% of the device memory less the weights"
    else:
        tokens, source = None, "unknown: the device reports no memory size"
    return {"tokens": tokens, "kv_bytes_per_token": model.kv_bytes_per_token, "source": source}


def profile_stem(device: str, model: str) -> str:
    """``<device>-<model>``: the calibrated device and model, e.g. ``nvidia-h100-80gb-hbm3-smollm2-135m``."""
    return f"{device}-{Path(model).stem}"


def write_profile(cost: CostModel, report: dict, output: Path, stem: str) -> list[Path]:
    """Writes the cost model and the device profile (``profile_paths``: into the folder ``output`` as
    ``<stem>.json`` and ``<stem>.report.json``, or to the file ``output``); returns both paths."""
    profile, report_path = profile_paths(output, stem)
    profile.parent.mkdir(parents=True, exist_ok=True)
    cost.save(profile)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    return [profile, report_path]


def calibrate(
    model: str = "tiny",
    output: Path | None = None,
    repeats: int = 3,
    dtype: str = "float32",
    kv_memory_bytes: int | None = None,
) -> tuple[CostModel, dict]:
    """Measures f and g of ``model`` in ``dtype`` on this device; returns the cost model and the device profile.

    Negative fitted coefficients (noise around a term that does not matter on this device) are
    clipped to 0 in the cost model; the report keeps the raw fits. Given ``output`` (a folder, or the
    cost model's ``.json`` file), writes the cost model and the device profile there and prints their paths.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if output is not None:
        profile_paths(Path(output), "check")  # a bad file name fails before the measurement
    token_budget = SchedulerConfig().max_num_batched_tokens
    loaded = load_model(model, dtype=dtype)
    device = jax.devices()[0]
    memory = device_memory_bytes(device)
    identity = device_identity(device, memory)  # the load average before the measurement
    runner = LLMEngine(loaded, _engine_config(token_budget)).runner
    iteration_points = _iteration_points(runner, token_budget, repeats)
    swap_points = _swap_points(runner, runner.swapper, repeats)
    peaks = measure_device_peaks("float32" if dtype in QUANTIZED_DTYPES else dtype)
    leaves = jax.tree.leaves(loaded.params)
    weight_bytes, parameters = sum(leaf.nbytes for leaf in leaves), sum(leaf.size for leaf in leaves)
    fractions = _roofline_fractions(iteration_points, peaks, weight_bytes, parameters, loaded.config.kv_bytes_per_token)

    a, b, c, f_r2 = fit_plane([(p["num_tokens"], p["context_tokens"], p["seconds"]) for p in iteration_points])
    one_way = [(p["swap_out_s"] + p["swap_in_s"]) / 2 for p in swap_points]
    slope, intercept, g_r2 = fit_linear([p["tokens"] for p in swap_points], one_way)
    budget = kv_budget(loaded.config, memory, kv_memory_bytes)
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
        kv_capacity_tokens=budget["tokens"],
    )
    cost = dataclasses.replace(cost, swap_budget_tokens=_swap_budget(cost))
    report = {
        "model": model,
        "dtype": dtype,
        "device": identity,
        "kv_budget": budget,
        "repeats": repeats,
        "roofline": {
            "fractions": fractions,
            "peak_read_gbps": peaks.bandwidth / 1e9,
            "peak_matmul_gflops": peaks.flops / 1e9,
            "matmul_dtype": peaks.dtype,
            "weight_bytes": weight_bytes,
            "parameters": parameters,
        },
        "iteration_fit": {"a": a, "b": b, "c": c, "r2": f_r2},
        "swap_fit": {"a_s": slope, "b_s": intercept, "r2": g_r2, "one_way": "mean of swap-out and swap-in"},
        "iteration_points": iteration_points,
        "swap_points": swap_points,
        "cost_model": cost.to_dict(),
    }
    console = Console()
    _print_summary(console, cost, report)
    if cost.kv_capacity_tokens is None:
        console.print(
            f"KV capacity unknown ({device.platform} reports no memory size): give --kv-memory-mib here, "
            "or bench the profile with --kv-tokens"
        )
    if output is not None:
        print_written(write_profile(cost, report, Path(output), profile_stem(device_slug(device), model)))
    return cost, report

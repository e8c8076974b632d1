"""Tables of ``lamps-jax bench-serve``: per policy, the load over HTTP beside the same workload in-process.

Both sides are summarized from one per-request record (``Timing``) with the formulas of ``bench.metrics``: TTFT from
arrival to the first token, E2E from arrival to the last token, API time the seconds spent in calls, ITL as that
module's time per output token, (E2E - API time - TTFT) / (generated tokens - 1). Only requests served to completion
count. A row holds one (trace, rate, seed, policy): each metric over HTTP (``http_``), in-process (``in_process_``)
and their ratio (``ratio_``, HTTP / in-process); over several seeds, ``report.aggregate_seeds`` gives each cell as
the mean ± its 95% CI half-width. Every table follows its caption and the full setting.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lamps_jax.bench.metrics import api_time, percentile
from lamps_jax.bench.report import aggregate_seeds, format_cell, group_rows, interval_phrase, row_line
from lamps_jax.bench.serve_load import REUSED_TURNS, LoadResult, Timing
from lamps_jax.request import RequestOutput

if TYPE_CHECKING:
    from lamps_jax.bench.harness import RunResult  # imports the engine

METRICS = (
    ("ttft_mean", "TTFT mean s"),
    ("ttft_p99", "TTFT p99 s"),
    ("itl_mean", "ITL mean s"),
    ("e2e_mean", "E2E mean s"),
    ("e2e_p99", "E2E p99 s"),
    ("e2e_excl_api_mean", "E2E - API mean s"),
)
SIDES = (("http", "HTTP"), ("in_process", "in-process"), ("ratio", "HTTP / in-process"))


def output_timing(output: RequestOutput) -> Timing:
    """An in-process request's record, read as ``bench.metrics.summarize`` reads it."""
    return Timing(
        finished=output.finished and output.finish_reason in ("stop", "length"),
        ttft=output.time_to_first_token,
        e2e=output.latency,
        api_seconds=api_time(output),
        generated=output.num_generated_tokens,
    )


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def summarize(timings: Sequence[Timing]) -> dict[str, float]:
    """Finished requests and the ``METRICS`` over them."""
    done = [t for t in timings if t.finished]
    ttft = [t.ttft for t in done if t.ttft is not None]
    e2e = [t.e2e for t in done]
    itl = [(t.e2e - t.api_seconds - t.ttft) / (t.generated - 1) for t in done if t.generated > 1 and t.ttft is not None]
    return {
        "finished": len(done),
        "ttft_mean": _mean(ttft),
        "ttft_p99": percentile(ttft, 99),
        "itl_mean": _mean(itl),
        "e2e_mean": _mean(e2e),
        "e2e_p99": percentile(e2e, 99),
        "e2e_excl_api_mean": _mean([t.e2e - t.api_seconds for t in done]),
    }


def http_summary(load: LoadResult) -> dict:
    """The HTTP side of a row: ``summarize`` over the clients, their errors, and the KV reuse /metrics counted."""
    later_turns = sum(max(0, log.turns_sent - 1) for log in load.logs)
    reused = load.metrics.get(REUSED_TURNS, 0.0)
    return summarize([log.timing() for log in load.logs]) | {
        "errors": sum(log.error is not None for log in load.logs),
        "cut_short": int(load.cut_short),
        "wall_s": load.wall_seconds,
        "kv_reused_turns": int(reused),
        "later_turns": later_turns,
        "kv_reuse": reused / later_turns if later_turns else math.nan,
    }


def in_process_summary(result: RunResult, requests: int) -> dict:
    """The in-process side of a row: ``summarize`` over the outputs; cut short when the runner's time limit aborted
    requests in flight or left some unsent."""
    cut_short = len(result.outputs) < requests or any(o.finish_reason == "abort" for o in result.outputs)
    timings = [output_timing(o) for o in result.outputs]
    return summarize(timings) | {"cut_short": int(cut_short), "wall_s": result.wall_seconds}


def _ratio(http: float, in_process: float) -> float:
    return http / in_process if in_process and math.isfinite(in_process) else float("nan")


def comparison_row(point: dict, http: dict, in_process: dict) -> dict:
    """One row: ``point`` (trace, rate, seed, policy, ...), each side's values prefixed, the metrics' ratios."""
    row = (
        dict(point) | {f"http_{k}": v for k, v in http.items()} | {f"in_process_{k}": v for k, v in in_process.items()}
    )
    return row | {f"ratio_{k}": _ratio(http[k], in_process[k]) for k, _ in METRICS}


def setting_text(setting: dict) -> str:
    return "Setting: " + "; ".join(f"{k}={v}" for k, v in setting.items()) + "."


def caption(number: int, policy: str, seed_counts: list[int]) -> str:
    return (
        f"Table {number}. {policy}: the workload over HTTP (lamps-jax serve; one streaming client per conversation, "
        "which makes each API call itself between turns) beside the same workload in-process "
        f"(lamps-jax bench --mode real's runner); cells: {interval_phrase(seed_counts)}. TTFT: arrival to the first "
        "token; ITL: (E2E - API time - TTFT) / (generated tokens - 1); E2E: arrival to the last token; E2E - API: "
        "E2E less the time spent in API calls; HTTP / in-process: the ratio per seed, then averaged (above 1: the "
        "server's overhead); finished: requests served to completion, of those sent; KV reused: turns after the "
        "first whose prompt found their session's KV computed (/metrics, lamps_jax_session_turns_total)."
    )


def policy_table(rows: list[dict]) -> str:
    """Metrics down, (rate, side) across: the rows of one policy, aggregated over seeds."""
    rows = sorted(aggregate_seeds(rows), key=lambda r: r["rate"])
    header = ["metric"] + [f"{r['rate']:g} req/s {title}" for r in rows for _, title in SIDES]
    lines = [row_line(header), "|" + "---|" * len(header)]
    for key, title in METRICS:
        lines.append(row_line([title] + [format_cell(r, f"{side}_{key}") for r in rows for side, _ in SIDES]))
    finished, reuse = ["finished"], ["KV reused"]
    for r in rows:
        finished += [f"{format_cell(r, f'{side}_finished')} of {r['requests']:g}" for side, _ in SIDES[:2]] + [""]
        reuse += [format_cell(r, "http_kv_reuse"), "n/a", ""]
    lines += [row_line(finished), row_line(reuse)]
    return "\n".join(lines) + "\n"


def cut_short_line(rows: list[dict], time_limit: float) -> str:
    """Which runs reached the time limit (their unfinished requests are left out of the metrics)."""
    cut = [
        f"{title} at {r['rate']:g} req/s, seed {r['seed']}"
        for r in rows
        for side, title in SIDES[:2]
        if r[f"{side}_cut_short"]
    ]
    if not cut:
        return f"No run reached the time limit ({time_limit:g} s)."
    return f"Cut short at the time limit ({time_limit:g} s), their unfinished requests left out: {'; '.join(cut)}."


def serve_markdown(rows: list[dict], setting: dict) -> str:
    """One captioned table per policy, in the order the rows name them."""
    parts = []
    by_policy = group_rows(rows, ["policy"])
    for number, ((policy,), group) in enumerate(by_policy.items(), start=1):
        counts = [r["seeds"] for r in aggregate_seeds(group)]
        parts.append(
            f"{caption(number, policy, counts)}\n{setting_text(setting)}\n\n{policy_table(group)}\n"
            f"{cut_short_line(group, setting['time_limit_s'])}\n"
        )
    return "\n".join(parts)


def write_serve_results(rows: list[dict], setting: dict, output_dir: Path) -> list[Path]:
    """Writes ``serve_comparison.json`` (setting and rows), ``.csv`` (rows) and ``.md`` (the tables)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = [output_dir / f"serve_comparison.{ext}" for ext in ("json", "csv", "md")]
    paths[0].write_text(json.dumps({"setting": setting, "rows": rows}, indent=2) + "\n")
    with paths[1].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
        writer.writeheader()
        writer.writerows(rows)
    paths[2].write_text(serve_markdown(rows, setting))
    return paths

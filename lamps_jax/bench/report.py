"""Tables and plots of a policy comparison: Markdown, CSV, JSON and PNG files in one folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from lamps_jax.bench.harness import RunResult

TABLE_COLUMNS = (
    ("e2e_mean", "E2E mean s"),
    ("e2e_p99", "E2E p99 s"),
    ("ttft_mean", "TTFT mean s"),
    ("ttft_p99", "TTFT p99 s"),
    ("normalized_mean", "norm. s/token"),
    ("throughput_rps", "req/s"),
    ("memory_waste", "KV waste"),
    ("finished", "finished"),
)


def markdown_table(rows: list[dict]) -> str:
    keys = ["trace", "rate", "policy"] + [k for k, _ in TABLE_COLUMNS]
    header = ["trace", "rate/s", "policy"] + [title for _, title in TABLE_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def improvement_table(
    rows: list[dict], policy: str = "lamps", baselines: tuple[str, ...] = ("infercept", "vllm")
) -> str:
    """Markdown: relative reduction of mean E2E and TTFT of ``policy`` vs each baseline, per trace and rate."""
    lines = ["| trace | rate/s | vs | E2E mean reduction | TTFT mean reduction |", "|---|---|---|---|---|"]
    by_key = {(r["trace"], r["rate"], r["policy"]): r for r in rows}
    for (trace, rate, name), row in by_key.items():
        if name != policy:
            continue
        for base in baselines:
            other = by_key.get((trace, rate, base))
            if other is None:
                continue
            e2e = 1 - row["e2e_mean"] / other["e2e_mean"]
            ttft = 1 - row["ttft_mean"] / other["ttft_mean"]
            lines.append(f"| {trace} | {rate} | {base} | {e2e:.1%} | {ttft:.1%} |")
    return "\n".join(lines) + "\n"


def write_rows(rows: list[dict], output_dir: Path, stem: str) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / f"{stem}.json").write_text(json.dumps(rows, indent=2) + "\n")
    fields = sorted({k for row in rows for k in row})
    with (output_dir / f"{stem}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    (output_dir / f"{stem}.md").write_text(markdown_table(rows) + "\n" + improvement_table(rows))


def plot_latency_vs_rate(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traces = sorted({r["trace"] for r in rows})
    fig, axes = plt.subplots(2, len(traces), figsize=(5.5 * len(traces), 7), squeeze=False)
    for col, trace in enumerate(traces):
        for policy in sorted({r["policy"] for r in rows}):
            points = sorted(
                (r["rate"], r["e2e_mean"], r["ttft_mean"])
                for r in rows
                if r["trace"] == trace and r["policy"] == policy
            )
            axes[0][col].plot([p[0] for p in points], [p[1] for p in points], marker="o", label=policy)
            axes[1][col].plot([p[0] for p in points], [p[2] for p in points], marker="o", label=policy)
        axes[0][col].set_title(f"{trace}: mean E2E latency")
        axes[1][col].set_title(f"{trace}: mean TTFT")
        for ax in axes[:, col]:
            ax.set_xlabel("request rate (req/s)")
            ax.set_ylabel("seconds")
            ax.set_yscale("log")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_run_details(results: list[RunResult], path: Path, title: str) -> None:
    """CDF of E2E latency and KV pages in use over time, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cdf, mem) = plt.subplots(1, 2, figsize=(12, 4.2))
    for result in results:
        latencies = sorted(o.latency for o in result.outputs if o.finish_reason in ("stop", "length"))
        if latencies:
            cdf.plot(latencies, [(i + 1) / len(latencies) for i in range(len(latencies))], label=result.policy)
        mem.plot(result.memory.times, result.memory.used_pages, label=result.policy, linewidth=0.8)
    cdf.set_xscale("log")
    cdf.set_xlabel("E2E latency (s)")
    cdf.set_ylabel("fraction of requests")
    mem.set_xlabel("time (s)")
    mem.set_ylabel("KV pages in use")
    for ax in (cdf, mem):
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

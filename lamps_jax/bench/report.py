"""Tables and plots of a policy comparison: Markdown, CSV, JSON and PNG files in one folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from lamps_jax.bench.harness import RunCurves

# What identifies a run apart from its policy and seed; a table shows the ones that vary.
POINT_KEYS = ("trace", "rate", "profile", "window", "kv_capacity_tokens", "length_noise", "starvation_threshold")
POINT_TITLES = {
    "rate": "rate/s",
    "kv_capacity_tokens": "KV tokens",
    "length_noise": "noise",
    "starvation_threshold": "starve",
}

TABLE_COLUMNS = (
    ("e2e_mean", "E2E mean s"),
    ("e2e_p99", "E2E p99 s"),
    ("ttft_mean", "TTFT mean s"),
    ("ttft_p99", "TTFT p99 s"),
    ("normalized_mean", "norm. s/token"),
    ("throughput_rps", "req/s"),
    ("memory_waste", "KV waste"),
    ("preemptions", "preempted"),
    ("finished", "finished"),
)
REDUCTION_COLUMNS = (
    ("e2e_mean", "E2E mean"),
    ("e2e_p99", "E2E p99"),
    ("ttft_mean", "TTFT mean"),
    ("ttft_p99", "TTFT p99"),
)


def point_keys(rows: list[dict]) -> list[str]:
    """Trace and rate, plus every other point key whose value differs between rows."""
    return [k for k in POINT_KEYS if k in ("trace", "rate") or len({r.get(k) for r in rows}) > 1]


def _group(rows: list[dict], keys: list[str]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    return groups


def _mean_sd(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return mean, sd


def _reduction(ours: float, theirs: float) -> float:
    """How much lower ours is, as a fraction of theirs (NaN when theirs is 0)."""
    return 1 - ours / theirs if theirs else float("nan")


def aggregate_seeds(rows: list[dict]) -> list[dict]:
    """One row per point and policy: numeric metrics averaged over seeds, with ``<metric>_sd`` and ``seeds``."""
    keys = [k for k in (*POINT_KEYS, "policy") if any(k in r for r in rows)]
    merged = []
    for group in _group(rows, keys).values():
        out = {k: group[0].get(k) for k in keys} | {"seeds": len(group)}
        for metric, value in group[0].items():
            if metric in out or metric == "seed" or not isinstance(value, int | float):
                continue
            out[metric], out[f"{metric}_sd"] = _mean_sd([r[metric] for r in group])
        merged.append(out)
    return merged


def _cell(row: dict, key: str) -> str:
    value = row.get(key)
    if not isinstance(value, float):
        return str(value)
    sd = row.get(f"{key}_sd")
    return f"{_number(value)} ± {_number(sd, 2)}" if sd else _number(value)


def _number(value: float, digits: int = 4) -> str:
    """Four significant digits, but whole numbers from 1,000 up (request counts) in full."""
    return f"{value:.0f}" if abs(value) >= 10 ** (digits - 1) else f"{value:.{digits}g}"


def markdown_table(rows: list[dict]) -> str:
    """Per point and policy, mean ± sd over seeds where there are several."""
    rows = aggregate_seeds(rows)
    keys = point_keys(rows) + ["policy"] + [k for k, _ in TABLE_COLUMNS]
    header = [POINT_TITLES.get(k, k) for k in point_keys(rows)] + ["policy"] + [t for _, t in TABLE_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(row, k) for k in keys) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def saturation_rates(rows: list[dict], baselines: tuple[str, ...], ttft_limit: float = 1.0) -> dict[tuple, tuple]:
    """Per point (all keys but the rate): (baseline, rate) of the baseline sustaining the highest swept rate.

    A baseline sustains a rate when its mean TTFT (averaged over seeds) stays within ``ttft_limit``
    seconds there and at every lower swept rate: past that the waiting queue grows for the whole window.
    Points where no baseline saturates within the sweep are left out.
    """
    rows = aggregate_seeds(rows)
    keys = [k for k in point_keys(rows) if k != "rate"]
    best: dict[tuple, tuple] = {}
    for point, group in _group([r for r in rows if r["policy"] in baselines], keys).items():
        for policy, runs in _group(group, ["policy"]).items():
            runs.sort(key=lambda r: r["rate"])
            sustained = None
            for run in runs:
                if run["ttft_mean"] > ttft_limit:
                    break
                sustained = run["rate"]
            if sustained is not None and sustained < runs[-1]["rate"] and sustained > best.get(point, (None, 0))[1]:
                best[point] = (policy[0], sustained)
    return best


def improvement_table(
    rows: list[dict],
    policy: str = "lamps",
    baselines: tuple[str, ...] = ("infercept", "vllm", "lamps_no_rank"),
    ttft_limit: float = 1.0,
) -> str:
    """Markdown: reduction of ``policy``'s metrics vs each baseline per point (mean ± sd over seeds).

    With a rate sweep that saturates a baseline, each rate is also given as a fraction of the rate that
    the strongest of ``vllm``, ``infercept`` and ``sjf`` sustains (see ``saturation_rates``).
    """
    keys = point_keys(rows)
    saturation = saturation_rates(rows, ("vllm", "infercept", "sjf"), ttft_limit)
    header = [POINT_TITLES.get(k, k) for k in keys] + ["of saturation", "vs"] + [t for _, t in REDUCTION_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for point, group in _group(rows, keys).items():
        by_policy = _group(group, ["policy", "seed"])
        saturated = saturation.get(tuple(v for k, v in zip(keys, point) if k != "rate"))
        fraction = f"{point[keys.index('rate')] / saturated[1]:.2f}" if saturated else "n/a"
        for base in baselines:
            pairs = [
                (run[0], by_policy[(base, seed)][0])
                for (name, seed), run in by_policy.items()
                if name == policy and (base, seed) in by_policy
            ]
            if not pairs:
                continue
            cells = []
            for metric, _ in REDUCTION_COLUMNS:
                mean, sd = _mean_sd([_reduction(ours[metric], theirs[metric]) for ours, theirs in pairs])
                cells.append(f"{mean:.1%} ± {sd:.1%}" if len(pairs) > 1 else f"{mean:.1%}")
            lines.append("| " + " | ".join([str(v) for v in point] + [fraction, base] + cells) + " |")
    notes = [
        f"Saturation (mean TTFT > {ttft_limit:g} s) of the strongest baseline at "
        + ", ".join(f"{k}={v}" for k, v in zip([k for k in keys if k != "rate"], point))
        + f": {name} sustains {rate:g} req/s."
        for point, (name, rate) in saturation.items()
    ]
    return "\n".join(lines) + "\n" + "".join(f"\n{n}" for n in notes) + ("\n" if notes else "")


def write_rows(rows: list[dict], output_dir: Path, stem: str) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / f"{stem}.json").write_text(json.dumps(rows, indent=2) + "\n")
    fields = sorted({k for row in rows for k in row})
    with (output_dir / f"{stem}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    (output_dir / f"{stem}.md").write_text(markdown_table(rows) + "\n" + improvement_table(rows))


def plot_sweep(rows: list[dict], path: Path) -> None:
    """Mean E2E and TTFT (± sd over seeds) against the swept key, one line per policy, a column per trace.

    The swept key is the rate if it varies, else the first other point key that does; any further
    varying key becomes part of the line labels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = aggregate_seeds(rows)
    varying = [k for k in point_keys(rows) if k != "trace" and len({r[k] for r in rows}) > 1]
    x_key = varying[0] if varying else "rate"
    label_keys = ["policy"] + [k for k in varying if k != x_key]
    traces = sorted({r["trace"] for r in rows})
    fig, axes = plt.subplots(2, len(traces), figsize=(5.5 * len(traces), 7), squeeze=False)
    for col, trace in enumerate(traces):
        for label, runs in _group([r for r in rows if r["trace"] == trace], label_keys).items():
            runs.sort(key=lambda r: r[x_key])
            name = " ".join(
                str(v) if k == "policy" else f"{POINT_TITLES.get(k, k)}={v}" for k, v in zip(label_keys, label)
            )
            for ax, metric in zip(axes[:, col], ("e2e_mean", "ttft_mean")):
                ax.errorbar(
                    [r[x_key] for r in runs],
                    [r[metric] for r in runs],
                    yerr=[r.get(f"{metric}_sd", 0.0) for r in runs],
                    marker="o",
                    capsize=3,
                    label=name,
                )
        axes[0][col].set_title(f"{trace}: mean E2E latency")
        axes[1][col].set_title(f"{trace}: mean TTFT")
        for ax in axes[:, col]:
            ax.set_xlabel(POINT_TITLES.get(x_key, x_key))
            ax.set_ylabel("seconds")
            ax.set_yscale("log")
            if x_key == "starvation_threshold":
                ax.set_xscale("log")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_run_details(runs: list[RunCurves], path: Path, title: str) -> None:
    """CDF of E2E latency and KV pages in use over time, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cdf, mem) = plt.subplots(1, 2, figsize=(12, 4.2))
    for run in runs:
        if run.latencies:
            cdf.plot(run.latencies, [(i + 1) / len(run.latencies) for i in range(len(run.latencies))], label=run.label)
        mem.plot(run.memory.times, run.memory.used_pages, label=run.label, linewidth=0.8)
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

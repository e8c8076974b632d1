"""Plots of a policy comparison: latency against the swept key, and per-point latency CDFs and KV memory.

Every policy keeps one color, line style and marker in every plot, and ``lamps`` is drawn last and
thicker, so that it stays visible where it overlaps ``lamps_no_rank``. Log axes are labelled with
plain numbers (78, 0.05). Each figure has a title and a caption line under it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import ticker
from matplotlib.axis import Axis
from matplotlib.figure import Figure  # drawn without pyplot: no GUI backend, nothing to close

from lamps_jax.bench.harness import RunCurves
from lamps_jax.bench.report import POINT_TITLES, aggregate_seeds, group_rows, point_keys
from lamps_jax.bench.wording import plural

# The point keys as axis labels.
AXIS_LABELS = {
    "trace": "trace",
    "rate": "request rate (requests/s)",
    "profile": "cost profile",
    "window": "arrival window (s)",
    "kv_capacity_tokens": "KV capacity (tokens)",
    "length_noise": "relative noise of predicted lengths",
    "starvation_threshold": "starvation threshold (iterations)",
    "max_num_seqs": "running requests at most",
    "admission": "admission",
    "admission_watermark": "admission watermark (share of pages)",
    "swap_budget": "swap budget",
    "decodes_first": "decodes scheduled first",
    "api_time_source": "API time known to the scheduler",
    "starvation_scope": "requests that age (starvation)",
    "score_step": "LAMPS score's iteration time",
    "final_call": "a trace's final API call",
    "max_model_len": "context limit (tokens)",
    "enable_prefix_caching": "prefix caching",
    "slo_scale": "SLO (times the unloaded latency)",
    "agent_token_scale": "agent sessions' token scale",
}
POLICY_STYLES = {
    "vllm": {"color": "tab:blue", "linestyle": "-", "marker": "o"},
    "infercept": {"color": "tab:orange", "linestyle": "--", "marker": "s"},
    "infercept_swap": {"color": "tab:brown", "linestyle": "--", "marker": "P"},
    "sjf": {"color": "tab:green", "linestyle": ":", "marker": "^"},
    "lamps_no_rank": {"color": "tab:purple", "linestyle": "-.", "marker": "v"},
    "lamps": {"color": "tab:red", "linestyle": "-", "marker": "D", "linewidth": 2.2, "zorder": 3},
}


def policy_style(policy: str) -> dict:
    """Matplotlib line keywords of a policy (an unknown one gets the default color cycle and a thin line)."""
    return {"linewidth": 1.2} | POLICY_STYLES.get(policy, {"linestyle": "-", "marker": "x"})


def plain_number(value: float) -> str:
    """A tick value without exponent, to four significant digits: 78, 0.05, 20000."""
    return np.format_float_positional(float(f"{value:.4g}"), trim="-")


class PlainLogFormatter(ticker.LogFormatterSciNotation):
    """Labels the ticks that matplotlib's log formatter would label, as plain numbers instead of 7.8x10^1."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return plain_number(x) if super().__call__(x, pos) else ""


def _plain_log_axis(axis: Axis) -> None:
    axis.set_major_formatter(PlainLogFormatter())
    axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))


def _caption(fig: Figure, text: str) -> None:
    fig.text(0.5, 0.01, text, ha="center", va="bottom", fontsize=8, wrap=True)
    fig.tight_layout(rect=(0, 0.05, 1, 1))


def sweep_figure(rows: list[dict]) -> Figure:
    """Mean E2E and TTFT (± 95% CI over seeds) against the swept key, one line per policy, a column per trace.

    The swept key is the rate if it varies, else the first other point key that does; any further
    varying key becomes part of the line labels.
    """
    rows = aggregate_seeds(rows)
    varying = [k for k in point_keys(rows) if k != "trace" and len({r[k] for r in rows}) > 1]
    x_key = varying[0] if varying else "rate"
    label_keys = ["policy"] + [k for k in varying if k != x_key]
    traces = sorted({r["trace"] for r in rows})
    fig = Figure(figsize=(5.5 * len(traces), 7.6))
    axes = fig.subplots(2, len(traces), squeeze=False)
    for col, trace in enumerate(traces):
        lines = group_rows([r for r in rows if r["trace"] == trace], label_keys)
        for label in sorted(lines, key=lambda label: label[0] == "lamps"):
            runs = sorted(lines[label], key=lambda r: r[x_key])
            name = " ".join(
                str(v) if k == "policy" else f"{POINT_TITLES.get(k, k)}={v}" for k, v in zip(label_keys, label)
            )
            for ax, metric in zip(axes[:, col], ("e2e_mean", "ttft_mean")):
                ax.errorbar(
                    [r[x_key] for r in runs],
                    [r[metric] for r in runs],
                    yerr=[r.get(f"{metric}_ci95") or 0.0 for r in runs],
                    capsize=3,
                    label=name,
                    **policy_style(label[0]),
                )
        axes[0][col].set_title(f"{trace}: mean E2E latency")
        axes[1][col].set_title(f"{trace}: mean TTFT")
        for ax in axes[:, col]:
            ax.set_xlabel(AXIS_LABELS.get(x_key, x_key))
            ax.set_ylabel("seconds (log scale)")
            ax.set_yscale("log")
            _plain_log_axis(ax.yaxis)
            if x_key == "starvation_threshold":
                ax.set_xscale("log")
                _plain_log_axis(ax.xaxis)
            ax.legend(fontsize=7)
    seeds = max(r.get("seeds", 1) for r in rows)
    fig.suptitle(f"Mean latency per policy against the {AXIS_LABELS.get(x_key, x_key)}")
    _caption(
        fig,
        f"Top: mean end-to-end latency; bottom: mean time to first token; error bars: 95% CI (Student t) over "
        f"{plural(seeds, 'seed')}. Each policy keeps its color and line style; lamps is drawn thick, on top.",
    )
    return fig


def run_details_figure(runs: list[RunCurves], title: str) -> Figure:
    """CDF of E2E latency and KV pages in use over time, one line per run (``lamps`` last, on top)."""
    fig = Figure(figsize=(12, 4.8))
    cdf, mem = fig.subplots(1, 2)
    for run in sorted(runs, key=lambda r: r.label == "lamps"):
        style = policy_style(run.label)
        if run.latencies:
            fractions = [(i + 1) / len(run.latencies) for i in range(len(run.latencies))]
            cdf.plot(run.latencies, fractions, label=run.label, markevery=0.1, markersize=4, **style)
        thinner = {"marker": None, "linewidth": 0.6 * style["linewidth"]}  # the memory trace is dense
        mem.plot(run.memory.times, run.memory.used_pages, label=run.label, **(style | thinner))
    cdf.set_xscale("log")
    _plain_log_axis(cdf.xaxis)
    cdf.set_xlabel("E2E latency (s, log scale)")
    cdf.set_ylabel("fraction of requests")
    cdf.set_title("CDF of end-to-end latency")
    mem.set_xlabel("time (s)")
    mem.set_ylabel("KV pages in use")
    mem.set_title("KV memory over time")
    for ax in (cdf, mem):
        ax.legend(fontsize=8)
    fig.suptitle(title)
    _caption(
        fig,
        "Left: share of the finished requests served within a latency. Right: KV-cache pages in use. "
        "Each policy keeps its color and line style; lamps is drawn thick, on top.",
    )
    return fig


def save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path

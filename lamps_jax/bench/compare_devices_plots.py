"""The plots of ``compare-devices``: latency against the rate as a fraction of each device's saturation, and the
KV strategy mix per device. One column per policy; each device keeps one color; seeds are averaged."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from lamps_jax.bench.compare_devices_report import SHARES, seed_means
from lamps_jax.bench.plots import _caption, _plain_log_axis

STRATEGY_COLORS = {"share_preserve": "tab:blue", "share_discard": "tab:orange", "share_swap": "tab:green"}


def _setting_caption(setting: dict) -> str:
    return (
        f"trace {setting['trace']}, "
        + (f"window {setting['window']:g} s" if setting.get("arrivals") is None else f"{setting['arrivals']} arrivals")
        + f", seeds {', '.join(map(str, setting['seeds']))}; "
        f"saturation: {setting['saturation_policy']}'s mean TTFT within {setting['ttft_limit']:g} s "
        "(or the device's SLO TTFT)"
    )


def latency_figure(rows: list[dict], setting: dict) -> Figure:
    """Mean E2E (top) and mean TTFT (bottom) against the rate over each device's saturation rate."""
    merged = [r for r in seed_means(rows) if r["rate_set_as"] != "absolute"]
    policies = list(dict.fromkeys(r["policy"] for r in merged))
    devices = list(dict.fromkeys(r["device"] for r in merged))
    fig = Figure(figsize=(4.8 * max(1, len(policies)), 7.4))
    axes = fig.subplots(2, max(1, len(policies)), squeeze=False)
    for col, policy in enumerate(policies):
        for device in devices:
            runs = sorted(
                (r for r in merged if (r["policy"], r["device"]) == (policy, device)), key=lambda r: r["rate"]
            )
            for ax, metric in zip(axes[:, col], ("e2e_mean", "ttft_mean")):
                ax.plot([r["of_saturation"] for r in runs], [r[metric] for r in runs], marker="o", label=device)
        axes[0][col].set_title(f"{policy}: mean E2E latency")
        axes[1][col].set_title(f"{policy}: mean TTFT")
        for ax in axes[:, col]:
            ax.set_xlabel("rate / the device's saturation rate")
            ax.set_ylabel("seconds (log scale)")
            ax.set_yscale("log")
            _plain_log_axis(ax.yaxis)
            ax.legend(fontsize=7)
    fig.suptitle("Latency per device at the same fractions of each device's own saturation rate")
    _caption(fig, _setting_caption(setting))
    return fig


def mix_figure(rows: list[dict], setting: dict) -> Figure:
    """Stacked bars: the shares of paused calls preserved, discarded and swapped, per device and rate setting."""
    merged = seed_means(rows)
    policies = list(dict.fromkeys(r["policy"] for r in merged))
    fig = Figure(figsize=(4.8 * max(1, len(policies)), 4.6))
    axes = fig.subplots(1, max(1, len(policies)), squeeze=False)[0]
    for ax, policy in zip(axes, policies):
        bars = [r for r in merged if r["policy"] == policy]
        xs = np.arange(len(bars))
        bottom = np.zeros(len(bars))
        for share in SHARES:
            heights = np.array([r[share] for r in bars])
            ax.bar(xs, heights, bottom=bottom, color=STRATEGY_COLORS[share], label=share.removeprefix("share_"))
            bottom += heights
        ax.set_xticks(xs, [f"{r['device']}\n{r['compare_at']}" for r in bars], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("share of paused calls")
        ax.set_ylim(0, 1)
        ax.set_title(f"{policy}: KV strategy at the call")
        ax.legend(fontsize=7)
    fig.suptitle("KV strategy chosen for paused calls, per device")
    _caption(fig, _setting_caption(setting) + "; a policy without paused calls shows no bar")
    return fig

"""The tables of ``compare-devices``, in Markdown, each after its caption, with the setting printed above them.

Table 1: per device, its cost model, KV capacity and saturation rate. Table 2: per device, rate and policy, the
mean and p99 of E2E latency and TTFT (mean ± 95% CI over seeds, Student t, with several seeds). Table 3: the
strategy mix of the paused calls. Table 4: why the mix can differ, from each cost model (``swap_vs_compute``).
Then one line per (rate, policy) where a strategy's share differs by ``MIX_GAP`` or more between devices.
"""

from __future__ import annotations

from lamps_jax.bench.report import format_cell, group_rows, mean_ci95, row_line

MIX_GAP = 0.10  # a strategy's share that differs by 10 points or more between devices is called out
LATENCY_COLUMNS = (
    ("e2e_mean", "E2E mean s"),
    ("e2e_p99", "E2E p99 s"),
    ("ttft_mean", "TTFT mean s"),
    ("ttft_p99", "TTFT p99 s"),
    ("finished", "finished"),
)
MIX_COLUMNS = (
    ("paused_calls", "paused calls"),
    ("share_preserve", "preserve"),
    ("share_discard", "discard"),
    ("share_swap", "swap"),
    ("share_preserve->discard", "later preserve->discard"),
    ("share_preserve->swap", "later preserve->swap"),
)
SHARES = ("share_preserve", "share_discard", "share_swap")


def _table(header: list[str], lines: list[list[str]]) -> str:
    return "\n".join([row_line(header), "|" + "---|" * len(header), *(row_line(cells) for cells in lines)]) + "\n"


def seed_means(rows: list[dict]) -> list[dict]:
    """One row per device, rate and policy (in run order): every metric's mean over seeds and, with two seeds or
    more, its 95% CI half-width as ``<metric>_ci95``."""
    merged = []
    for group in group_rows(rows, ["device", "rate", "policy"]).values():
        out = {k: group[0][k] for k in ("device", "rate", "policy", "rate_set_as", "of_saturation")}
        out["seeds"] = len(group)
        out["compare_at"] = f"{out['rate']:.3g} requests/s" if out["rate_set_as"] == "absolute" else out["rate_set_as"]
        for metric, _ in (*LATENCY_COLUMNS, *MIX_COLUMNS):
            out[metric], half = mean_ci95([float(r.get(metric, 0)) for r in group])
            if half is not None:
                out[f"{metric}_ci95"] = half
        merged.append(out)
    return merged


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.4g}"


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.4g}"


def device_table(devices: list[dict]) -> str:
    header = ["device", "measured on", "a us/token", "b us/ctx token", "c ms", "a_s us/token", "b_s ms", "B"]
    header += ["KV tokens", "TTFT limit s", "saturation req/s"]
    lines = []
    for d in devices:
        cost, identity = d["cost_model"], d["identity"]
        where = "built-in" if identity is None else f"{identity['device_kind']}, {d['model']}, {d['dtype']}"
        lines.append(
            [
                d["device"],
                where,
                _us(cost["iter_per_token"]),
                _us(cost["iter_per_context_token"]),
                _ms(cost["iter_base"]),
                _us(cost["swap_per_token"]),
                _ms(cost["swap_base"]),
                str(cost["token_budget"]),
                str(d["kv_capacity_tokens"]),
                f"{d['ttft_limit_s']:.3g}",
                f"{d['saturation_rate']:.3g}",
            ]
        )
    return _table(header, lines)


def latency_table(merged: list[dict]) -> str:
    header = ["device", "rate set as", "of saturation", "rate/s", "policy", *(t for _, t in LATENCY_COLUMNS)]
    lines = [
        [r["device"], r["rate_set_as"], f"{r['of_saturation']:.2f}", f"{r['rate']:.3g}", r["policy"]]
        + [format_cell(r, k) for k, _ in LATENCY_COLUMNS]
        for r in merged
    ]
    return _table(header, lines)


def _share(row: dict, key: str) -> str:
    if key == "paused_calls":
        return f"{row[key]:.0f}"
    half = row.get(f"{key}_ci95")
    return f"{row[key]:.0%}" if half is None else f"{row[key]:.0%} ± {half:.0%}"


def mix_table(merged: list[dict]) -> str:
    header = ["device", "rate set as", "rate/s", "policy", *(t for _, t in MIX_COLUMNS)]
    lines = [
        [r["device"], r["rate_set_as"], f"{r['rate']:.3g}", r["policy"]] + [_share(r, k) for k, _ in MIX_COLUMNS]
        for r in merged
    ]
    return _table(header, lines)


def why_table(devices: list[dict]) -> str:
    header = ["device", "context C", "recompute C ms", "swap out+in ms", "swap / recompute"]
    header += ["preserve < discard below s", "preserve < swap below s"]
    lines = [
        [
            d["device"],
            str(w["context_tokens"]),
            _ms(w["recompute_s"]),
            _ms(w["swap_round_trip_s"]),
            f"{w['swap_over_recompute']:.3g}",
            f"{w['preserve_beats_discard_below_s']:.3g}",
            f"{w['preserve_beats_swap_below_s']:.3g}",
        ]
        for d in devices
        for w in [d["why"]]
    ]
    return _table(header, lines)


def mix_differences(merged: list[dict], devices: list[dict]) -> list[str]:
    """Per rate (a fraction of saturation, or absolute) and policy run on every device: each strategy whose share
    differs by ``MIX_GAP`` or more between devices, with each device's swap / recompute ratio and the call time
    below which preserving beats swapping (``swap_vs_compute``)."""
    why = {d["device"]: d["why"] for d in devices}
    notes = []
    for (compare_at, policy), group in group_rows(merged, ["compare_at", "policy"]).items():
        if len(group) < len(devices):
            continue
        for share in SHARES:
            low, high = min(group, key=lambda r: r[share]), max(group, key=lambda r: r[share])
            if high[share] - low[share] >= MIX_GAP:
                strategy = share.removeprefix("share_")
                ratios = "; ".join(
                    f"{r['device']} {why[r['device']]['swap_over_recompute']:.3g} and "
                    f"{why[r['device']]['preserve_beats_swap_below_s']:.3g} s"
                    for r in group
                )
                notes.append(
                    f"{policy} at {compare_at}: {strategy} {high[share]:.0%} of the paused calls on "
                    f"{high['device']} vs {low[share]:.0%} on {low['device']} (swap out+in / recompute of C, and the "
                    f"call time below which preserving C beats swapping it: {ratios})."
                )
    return notes


def setting_line(setting: dict) -> str:
    kv = "the profile's" if setting["kv_tokens"] is None else f"{setting['kv_tokens']} (profiles without their own)"
    fractions = ", ".join(f"{f:g}" for f in setting["fractions"])
    rates = ", ".join(f"{r:g}" for r in setting["rates"])
    return (
        f"Setting: trace {setting['trace']}, "
        + (
            f"window {setting['window']:g} s"
            if setting.get("arrivals") is None
            else f"window {setting['arrivals']} / rate (that many arrivals expected in each run)"
        )
        + ", "
        + f"policies {', '.join(setting['policies'])}, seeds {', '.join(map(str, setting['seeds']))}, "
        f"rates {fractions or 'none'} x each device's saturation"
        + (f" and {rates} requests/s" if rates else "")
        + f", max_model_len {setting['max_model_len']}, KV tokens {kv}; saturation: the highest rate at which "
        f"{setting['saturation_policy']} keeps its mean TTFT within {setting['ttft_limit']:g} s, or within the "
        "goodput SLO's TTFT (5x an idle prefill of a max_model_len prompt) where that is longer (seed "
        f"{setting['seeds'][0]}, bisected to {setting['tolerance']:.0%}); every other SimPoint field at its default."
    )


def comparison_tables(devices: list[dict], rows: list[dict], setting: dict) -> str:
    merged = seed_means(rows)
    seeds = max(r["seeds"] for r in merged)
    cells = "mean ± 95% CI (Student t) over seeds" if seeds > 1 else "one seed, so no interval"
    parts = [
        "# Devices compared\n",
        setting_line(setting) + "\n",
        "Table 1. Per device: its cost model, f = a·new tokens + b·context tokens + c per iteration and "
        "g = a_s·tokens + b_s per one-way swap, token budget B and KV capacity; and its saturation rate.\n",
        device_table(devices),
        f"Table 2. Latency per device, rate and policy; cells: {cells}. E2E: end-to-end latency; TTFT: time to "
        "first token; of saturation: the rate over that device's saturation rate.\n",
        latency_table(merged),
        f"Table 3. KV strategy of the paused calls: shares of the calls by the strategy chosen when the call began, "
        f"and the later changes of preserved calls (as shares of the calls); cells: {cells}.\n",
        mix_table(merged),
        "Table 4. Why the mix can differ: for a paused context C (the trace's median context at a call), the time "
        "to recompute it on return (chunks of B) and to swap it out and back, and the call durations below which "
        "preserving C wastes less memory-time than discarding or swapping it (INFERCEPT's waste equations, no "
        "other running rows).\n",
        why_table(devices),
    ]
    notes = mix_differences(merged, devices)
    parts.append(
        "Where the strategy mix differs by 10 points or more:\n\n" + "".join(f"- {n}\n" for n in notes)
        if notes
        else "No strategy's share differs by 10 points or more between the devices.\n"
    )
    return "\n".join(parts)

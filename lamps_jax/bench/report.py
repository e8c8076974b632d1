"""Tables of a policy comparison, with their captions: Markdown for the console and Markdown, CSV, JSON files.

Table 1 holds every metric per point and policy; Table 2 the reduction of LAMPS's latency vs each
baseline. ``check_rows`` tells the rows of a comparison from any other JSON before they are rendered.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from lamps_jax.bench.wording import plural

# What identifies a run apart from its policy and seed; a table shows the ones that vary.
POINT_KEYS = ("trace", "rate", "profile", "window", "kv_capacity_tokens", "length_noise", "starvation_threshold")
POINT_TITLES = {
    "rate": "rate/s",
    "kv_capacity_tokens": "KV tokens",
    "length_noise": "noise",
    "starvation_threshold": "starve",
}
BASELINES = ("infercept", "vllm", "lamps_no_rank")

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


def group_rows(rows: list[dict], keys: list[str]) -> dict[tuple, list[dict]]:
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
    """One row per point and policy: numeric metrics averaged over seeds, with ``<metric>_sd`` and ``seeds``.

    A metric some seeds lack (a ``strategy_<name>`` count where no call chose that strategy) counts as 0 there.
    """
    keys = [k for k in (*POINT_KEYS, "policy") if any(k in r for r in rows)]
    merged = []
    for group in group_rows(rows, keys).values():
        out = {k: group[0].get(k) for k in keys} | {"seeds": len(group)}
        metrics = dict.fromkeys(m for r in group for m, v in r.items() if isinstance(v, int | float))
        for metric in metrics:
            if metric in out or metric == "seed":
                continue
            out[metric], out[f"{metric}_sd"] = _mean_sd([r.get(metric, 0) for r in group])
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
    for point, group in group_rows([r for r in rows if r["policy"] in baselines], keys).items():
        for policy, runs in group_rows(group, ["policy"]).items():
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
    baselines: tuple[str, ...] = BASELINES,
    ttft_limit: float = 1.0,
) -> str:
    """Markdown: reduction of ``policy``'s metrics vs each baseline per point (mean ± sd over seeds).

    With a rate sweep that saturates a baseline, each rate is also given as a fraction of the rate that
    the strongest of ``vllm``, ``infercept`` and ``sjf`` sustains (see ``saturation_rates``). Empty when
    no point has both ``policy`` and a baseline.
    """
    keys = point_keys(rows)
    saturation = saturation_rates(rows, ("vllm", "infercept", "sjf"), ttft_limit)
    header = [POINT_TITLES.get(k, k) for k in keys] + ["of saturation", "vs"] + [t for _, t in REDUCTION_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for point, group in group_rows(rows, keys).items():
        by_policy = group_rows(group, ["policy", "seed"])
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
    if len(lines) == 2:
        return ""
    notes = [
        f"Saturation (mean TTFT > {ttft_limit:g} s) of the strongest baseline at "
        + ", ".join(f"{k}={v}" for k, v in zip([k for k in keys if k != "rate"], point))
        + f": {name} sustains {rate:g} req/s."
        for point, (name, rate) in saturation.items()
    ]
    return "\n".join(lines) + "\n" + "".join(f"\n{n}" for n in notes) + ("\n" if notes else "")


def _seeds_phrase(rows: list[dict]) -> str:
    seeds = len({r.get("seed") for r in rows})
    return f"mean ± sd over {plural(seeds, 'seed')}" if seeds > 1 else "one seed"


def metrics_caption(rows: list[dict]) -> str:
    return (
        f"Table 1. Every metric per point and policy ({_seeds_phrase(rows)}). E2E: end-to-end latency; "
        "TTFT: time to first token; norm.: (E2E - API time) / generated tokens; req/s: finished requests per "
        "second; KV waste: share of the KV memory-time held by requests paused for an API call; preempted: "
        "running requests sent back to wait (KV dropped); finished: requests served to completion."
    )


def reduction_caption(rows: list[dict], policy: str = "lamps") -> str:
    return (
        f"Table 2. Reduction of {policy}'s latency vs each baseline: (baseline - {policy}) / baseline, paired by "
        f"seed ({_seeds_phrase(rows)}); negative = {policy} is slower. of saturation: the rate as a fraction of "
        "the highest rate the strongest of vllm, infercept and sjf sustains (n/a: none saturates in the sweep)."
    )


def comparison_markdown(rows: list[dict], policy: str = "lamps", baselines: tuple[str, ...] = BASELINES) -> str:
    """Table 1 (every metric) and Table 2 (reductions vs the baselines), each after its caption line.

    Without ``policy`` and a baseline in the rows, one line says why there is no Table 2.
    """
    parts = [metrics_caption(rows) + "\n", markdown_table(rows)]
    reductions = improvement_table(rows, policy, baselines)
    if reductions:
        parts += [reduction_caption(rows, policy) + "\n", reductions]
    else:
        present = ", ".join(dict.fromkeys(r["policy"] for r in rows))
        parts.append(
            f"No Table 2 (reduction of {policy}'s latency vs the baselines): it needs {policy} and at least one of "
            f"{', '.join(baselines)} in the run; this run has {present}.\n"
        )
    return "\n".join(parts)


REQUIRED_KEYS = ("trace", "rate", "policy", *(k for k, _ in TABLE_COLUMNS), *(k for k, _ in REDUCTION_COLUMNS))


def _describe(data: object) -> str:
    if isinstance(data, dict):
        return f"a JSON object with keys {', '.join(list(data)[:8]) or '(none)'}"
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return f"a list of {plural(len(data), 'item')} whose first has keys {', '.join(list(data[0])[:8])}"
    if isinstance(data, list):
        return "an empty list" if not data else f"a list of {type(data[0]).__name__} values"
    return f"a JSON {type(data).__name__}"


def check_rows(data: object, source: str) -> list[dict]:
    """``data`` as the rows of a comparison, or a ValueError saying what ``source`` holds instead."""
    if isinstance(data, list) and data and all(isinstance(r, dict) and set(REQUIRED_KEYS) <= set(r) for r in data):
        return data
    first = data[0] if isinstance(data, list) and data else None
    missing = [k for k in REQUIRED_KEYS if k not in first] if isinstance(first, dict) else []
    raise ValueError(
        f"{source} is not the comparison.json of a lamps-jax bench run: expected a JSON list of rows with the keys "
        f"{', '.join(REQUIRED_KEYS)}; found {_describe(data)}" + (f" (missing {', '.join(missing)})" if missing else "")
    )


def write_rows(rows: list[dict], output_dir: Path, stem: str) -> list[Path]:
    """Writes ``<stem>.json``, ``.csv`` and ``.md`` (the captioned tables); returns their paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = [output_dir / f"{stem}.{ext}" for ext in ("json", "csv", "md")]
    paths[0].write_text(json.dumps(rows, indent=2) + "\n")
    fields = sorted({k for row in rows for k in row})
    with paths[1].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    paths[2].write_text(comparison_markdown(rows))
    return paths

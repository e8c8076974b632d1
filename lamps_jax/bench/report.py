"""Tables of a policy comparison, each after its caption and setting line: Markdown for the console, and
Markdown, CSV, JSON files.

Table 1 holds every metric per point and policy, as the mean over seeds ± the half-width of its 95% confidence
interval (Student t, n - 1 degrees of freedom; no interval with one seed). Table 2 holds the reduction of LAMPS's
latency vs each baseline, computed per seed on paired runs (same point and seed) and then averaged the same way.
A point is every field of ``SimPoint`` but the policy and the seed: a table's columns are the trace, the rate and
the point fields whose value differs between its rows; the setting line under each caption states the fields
that are constant, with their values, and the seeds. A field that no row holds (a JSON written before the field
existed) is left out of both. ``check_rows`` tells the rows of a comparison from any other JSON.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
from pathlib import Path

from scipy.stats import t as student_t  # scipy: a run dependency of jax

from lamps_jax.bench.wording import plural

POINT_TITLES = {  # short column titles of the point fields; any other field is titled by its name
    "rate": "rate/s",
    "window": "window s",
    "kv_capacity_tokens": "KV tokens",
    "length_noise": "noise",
    "starvation_threshold": "starve",
    "max_num_seqs": "seqs",
    "final_call": "final call",
}
SETTING_UNITS = {"window": " s"}
NONE_MEANS = {"kv_capacity_tokens": "the profile's"}  # what a None value stands for; elsewhere: not recorded
BASELINES = ("infercept", "infercept_swap", "vllm", "sjf", "lamps_no_rank")
SATURATION_BASELINES = ("vllm", "infercept", "infercept_swap", "sjf")  # the baselines a rate is measured against
OURS_PLUS = "lamps_plus"  # in a run with LAMPS+, every other policy (its ablations aside) is its baseline

TABLE_COLUMNS = (
    ("e2e_mean", "E2E mean s"),
    ("e2e_p99", "E2E p99 s"),
    ("ttft_mean", "TTFT mean s"),
    ("ttft_p99", "TTFT p99 s"),
    ("delay_mean", "E2E-API mean s"),
    ("normalized_mean", "norm. s/token"),
    ("goodput_rps", "goodput/s"),
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


@functools.cache
def point_fields() -> tuple[str, ...]:
    """Trace, rate, then every other ``SimPoint`` field but policy and seed: what sets a run apart."""
    from lamps_jax.bench.sim_grid import SimPoint  # late: sim_grid imports the engine

    names = [f.name for f in dataclasses.fields(SimPoint) if f.name not in ("policy", "seed")]
    return ("trace", "rate", *(n for n in names if n not in ("trace", "rate")))


def __getattr__(name: str) -> tuple[str, ...]:
    if name == "POINT_KEYS":  # the point fields, read from SimPoint when first asked for
        return point_fields()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _held(rows: list[dict]) -> list[str]:
    """The point fields some row holds, besides trace and rate."""
    return [k for k in point_fields()[2:] if any(k in r for r in rows)]


def point_keys(rows: list[dict]) -> list[str]:
    """Trace and rate, plus every point field whose value differs between rows (a row lacking it differs)."""
    return ["trace", "rate"] + [k for k in _held(rows) if len({r.get(k) for r in rows}) > 1]


def constant_fields(rows: list[dict]) -> dict:
    """The point fields (besides trace and rate) that every row holds with one value, and that value."""
    return {k: rows[0].get(k) for k in _held(rows) if len({r.get(k) for r in rows}) == 1}


def group_rows(rows: list[dict], keys: list[str]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    return groups


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    """The mean and the sample standard deviation (None with one value)."""
    n = len(values)
    mean = sum(values) / n
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None


def ci95_half_width(sd: float, n: int) -> float:
    """Half-width of the 95% confidence interval of a mean of n values: t(0.975, n - 1) * sd / sqrt(n)."""
    return float(student_t.ppf(0.975, n - 1)) * sd / math.sqrt(n)


def mean_ci95(values: list[float]) -> tuple[float, float | None]:
    """The mean and the half-width of its 95% confidence interval (Student t); None with one value."""
    mean, sd = mean_sd(values)
    return mean, None if sd is None else ci95_half_width(sd, len(values))


def _reduction(ours: float, theirs: float) -> float:
    """How much lower ours is, as a fraction of theirs (NaN when theirs is 0)."""
    return 1 - ours / theirs if theirs else float("nan")


def aggregate_seeds(rows: list[dict]) -> list[dict]:
    """One row per point and policy: each numeric metric's mean over seeds, ``seeds`` (their number n) and, with
    n >= 2, ``<metric>_ci95`` (95% CI half-width, Student t) and ``<metric>_sd`` (sample sd, for error bars).

    A metric some seeds lack (a ``strategy_<name>`` count where no call chose that strategy) counts as 0 there.
    """
    keys = ["trace", "rate", *_held(rows), "policy"]
    merged = []
    for group in group_rows(rows, keys).values():
        out = {k: group[0].get(k) for k in keys} | {"seeds": len(group)}
        metrics = dict.fromkeys(m for r in group for m, v in r.items() if isinstance(v, int | float))
        for metric in metrics:
            if metric in out or metric == "seed":
                continue
            out[metric], sd = mean_sd([r.get(metric, 0) for r in group])
            if sd is not None:
                out[f"{metric}_sd"], out[f"{metric}_ci95"] = sd, ci95_half_width(sd, len(group))
        merged.append(out)
    return merged


def _number(value: float, digits: int = 4) -> str:
    """Four significant digits, but whole numbers from 1,000 up (request counts) in full."""
    return f"{value:.0f}" if abs(value) >= 10 ** (digits - 1) else f"{value:.{digits}g}"


def _point_text(key: str, value: object) -> str:
    return NONE_MEANS.get(key, "n/r") if value is None else str(value)


def format_cell(row: dict, key: str) -> str:
    value = row.get(key)
    if not isinstance(value, float):
        return "n/r" if value is None else str(value)
    half = row.get(f"{key}_ci95")
    return _number(value) if half is None else f"{_number(value)} ± {_number(half, 2)}"


def row_line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def print_table(lines: list[str], output: Path | None) -> None:
    """Prints a captioned Markdown table (its lines); with ``output`` also writes it there and says where."""
    table = "\n".join(lines)
    print("\n" + table)
    if output:
        output.write_text(table + "\n")
        print(f"\nwrote {output}")


def markdown_table(rows: list[dict]) -> str:
    """Table 1: per point and policy, every metric as mean ± 95% CI half-width over seeds (the mean alone for one)."""
    rows = aggregate_seeds(rows)
    keys = point_keys(rows)
    columns = [(k, t) for k, t in TABLE_COLUMNS if k not in OPTIONAL_COLUMNS or any(k in r for r in rows)]
    header = [POINT_TITLES.get(k, k) for k in keys] + ["policy"] + [t for _, t in columns]
    lines = [row_line(header), "|" + "---|" * len(header)]
    for row in rows:
        point = [_point_text(k, row.get(k)) for k in keys]
        lines.append(row_line(point + [row["policy"]] + [format_cell(row, k) for k, _ in columns]))
    return "\n".join(lines) + "\n"


def saturation_rates(rows: list[dict], baselines: tuple[str, ...], ttft_limit: float = 1.0) -> dict[tuple, tuple]:
    """Per point (all keys but the rate): (baseline, rate) of the baseline sustaining the highest swept rate.

    A baseline sustains a rate when its mean TTFT (averaged over seeds) stays within ``ttft_limit``
    seconds there and at every lower swept rate: past that the waiting queue grows for the whole window.
    Points where some baseline sustains every swept rate (the strongest does not saturate within the
    sweep) are left out.
    """
    rows = aggregate_seeds(rows)
    keys = [k for k in point_keys(rows) if k != "rate"]
    best: dict[tuple, tuple] = {}
    unsaturated: set[tuple] = set()
    for point, group in group_rows([r for r in rows if r["policy"] in baselines], keys).items():
        for policy, runs in group_rows(group, ["policy"]).items():
            runs.sort(key=lambda r: r["rate"])
            sustained = None
            for run in runs:
                if run["ttft_mean"] > ttft_limit:
                    break
                sustained = run["rate"]
            if sustained == runs[-1]["rate"]:
                unsaturated.add(point)
            elif sustained is not None and sustained > best.get(point, (None, 0))[1]:
                best[point] = (policy[0], sustained)
    return {point: value for point, value in best.items() if point not in unsaturated}


def paired_reductions(rows: list[dict], policy: str = "lamps", baselines: tuple[str, ...] = BASELINES) -> list[dict]:
    """Per point and baseline present: ``policy``'s reduction of each Table 2 metric vs the baseline.

    The reduction (baseline - policy) / baseline is taken per seed, on the two runs of the same point and seed;
    each row holds the point's varying keys, ``vs`` (the baseline), ``pairs`` (the seeds paired) and, per metric,
    the mean reduction and, with two pairs or more, ``<metric>_ci95`` (95% CI half-width, Student t).
    """
    keys = point_keys(rows)
    out = []
    for point, group in group_rows(rows, keys).items():
        runs = {run: found[0] for run, found in group_rows(group, ["policy", "seed"]).items()}
        for base in baselines:
            pairs = [
                (ours, runs[(base, seed)])
                for (name, seed), ours in runs.items()
                if name == policy and (base, seed) in runs
            ]
            if not pairs:
                continue
            entry = dict(zip(keys, point)) | {"vs": base, "pairs": len(pairs)}
            for metric, _ in REDUCTION_COLUMNS:
                entry[metric], half = mean_ci95([_reduction(ours[metric], theirs[metric]) for ours, theirs in pairs])
                if half is not None:
                    entry[f"{metric}_ci95"] = half
            out.append(entry)
    return out


def improvement_table(
    rows: list[dict],
    policy: str = "lamps",
    baselines: tuple[str, ...] = BASELINES,
    ttft_limit: float = 1.0,
    saturation_baselines: tuple[str, ...] = SATURATION_BASELINES,
) -> str:
    """Table 2 (Markdown): ``paired_reductions`` as mean ± 95% CI half-width over the paired seeds.

    With a rate sweep that saturates a baseline, each rate is also given as a fraction of the rate that the
    strongest of ``SATURATION_BASELINES`` sustains (see ``saturation_rates``). Empty when no point has both
    ``policy`` and a baseline.
    """
    reductions = paired_reductions(rows, policy, baselines)
    if not reductions:
        return ""
    keys = point_keys(rows)
    saturation = saturation_rates(rows, saturation_baselines, ttft_limit)
    header = [POINT_TITLES.get(k, k) for k in keys] + ["of saturation", "vs"] + [t for _, t in REDUCTION_COLUMNS]
    lines = [row_line(header), "|" + "---|" * len(header)]
    for entry in reductions:
        saturated = saturation.get(tuple(entry[k] for k in keys if k != "rate"))
        fraction = f"{entry['rate'] / saturated[1]:.2f}" if saturated else "n/a"
        cells = []
        for metric, _ in REDUCTION_COLUMNS:
            half = entry.get(f"{metric}_ci95")
            cells.append(f"{entry[metric]:.1%}" if half is None else f"{entry[metric]:.1%} ± {half:.1%}")
        lines.append(row_line([_point_text(k, entry[k]) for k in keys] + [fraction, entry["vs"]] + cells))
    notes = [
        f"Saturation (mean TTFT > {ttft_limit:g} s) of the strongest baseline at "
        + ", ".join(f"{k}={_point_text(k, v)}" for k, v in zip([k for k in keys if k != "rate"], point))
        + f": {name} sustains {rate:g} req/s."
        for point, (name, rate) in saturation.items()
    ]
    return "\n".join(lines) + "\n" + "".join(f"\n{n}" for n in notes) + ("\n" if notes else "")


def interval_phrase(counts: list[int]) -> str:
    """How the cells of a table were averaged, given the number of seeds behind each of its rows."""
    low, high = min(counts), max(counts)
    if high < 2:
        return "one seed per point, so no interval"
    n = f"{high}" if low == high else f"{low} to {high}"
    return f"mean ± 95% CI (Student t, {n} seeds)" + ("; the mean alone where one seed" if low < 2 else "")


def setting_text(rows: list[dict]) -> str:
    """The setting line printed with every table: each point field constant over the rows, and the seeds."""
    fields = [
        f"{k}={_point_text(k, v)}{SETTING_UNITS.get(k, '') if v is not None else ''}"
        for k, v in constant_fields(rows).items()
    ]
    seeds = sorted({r["seed"] for r in rows if "seed" in r})
    seed_text = f"{'seeds' if len(seeds) > 1 else 'seed'} {', '.join(map(str, seeds)) or 'not recorded'}"
    return "Setting: " + "; ".join([", ".join(fields), seed_text] if fields else [seed_text]) + "."


def metrics_caption(rows: list[dict]) -> str:
    counts = [r["seeds"] for r in aggregate_seeds(rows)]
    return (
        f"Table 1. Every metric per point and policy; cells: {interval_phrase(counts)}. E2E: end-to-end latency; "
        "TTFT: time to first token; E2E-API: E2E less the time in API calls (what the engine adds); norm.: "
        "(E2E - API time) / generated tokens; goodput: finished requests per second that met the SLO (TTFT and "
        "time per output token within slo_scale x an idle engine's at a max_model_len prompt); req/s: finished "
        "requests per second; KV waste: share of the KV memory-time held by requests paused for an API call; "
        "preempted: times a running request was sent back, to wait (KV dropped) or to the host (KV swapped out); "
        "finished: requests served to completion; n/r: not recorded in that row."
    )


def reduction_caption(
    rows: list[dict],
    policy: str = "lamps",
    baselines: tuple[str, ...] = BASELINES,
    saturation_baselines: tuple[str, ...] = SATURATION_BASELINES,
) -> str:
    counts = [r["pairs"] for r in paired_reductions(rows, policy, baselines)] or [1]
    return (
        f"Table 2. Reduction of {policy}'s latency vs each baseline, (baseline - {policy}) / baseline, computed per "
        f"seed on paired runs (same point and seed); cells: {interval_phrase(counts)}; negative = {policy} is "
        "slower. of saturation: the rate as a fraction of the highest rate the strongest of "
        f"{', '.join(saturation_baselines)} sustains (n/a: none saturates in the sweep)."
    )


def comparison_markdown(rows: list[dict], policy: str = "lamps", baselines: tuple[str, ...] = BASELINES) -> str:
    """Table 1 (every metric) and Table 2 (reductions vs the baselines), each after its caption and setting lines.

    In a run with LAMPS+ (``OURS_PLUS``), Table 2 is LAMPS+'s against every other policy of the run but its
    ablations (against its ablations when there is no other), and rates are measured against the strongest of
    them. Without ``policy`` and a baseline in the rows, one line says why there is no Table 2.
    """
    saturation_baselines = SATURATION_BASELINES
    present = list(dict.fromkeys(r["policy"] for r in rows))
    if policy == "lamps" and OURS_PLUS in present:
        policy = OURS_PLUS
        others = tuple(p for p in present if not p.startswith(OURS_PLUS))
        ablations = tuple(p for p in present if p.startswith(f"{OURS_PLUS}-"))
        baselines = saturation_baselines = others or ablations  # a run of LAMPS+ alone: against its ablations
    setting = setting_text(rows)
    parts = [f"{metrics_caption(rows)}\n{setting}\n", markdown_table(rows)]
    reductions = improvement_table(rows, policy, baselines, saturation_baselines=saturation_baselines)
    if reductions:
        caption = reduction_caption(rows, policy, baselines, saturation_baselines)
        parts += [f"{caption}\n{setting}\n", reductions]
    else:
        parts.append(
            f"No Table 2 (reduction of {policy}'s latency vs the baselines): it needs {policy} and at least one of "
            f"{', '.join(baselines)} in the run; this run has {', '.join(present)}.\n"
        )
    return "\n".join(parts)


OPTIONAL_COLUMNS = ("delay_mean", "goodput_rps")  # recorded from LAMPS+ on: shown when some row has them
REQUIRED_KEYS = (
    "trace",
    "rate",
    "policy",
    *(k for k, _ in TABLE_COLUMNS if k not in OPTIONAL_COLUMNS),
    *(k for k, _ in REDUCTION_COLUMNS),
)


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

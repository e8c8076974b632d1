"""``lamps-jax compare-devices``: one workload, its policies and its rates simulated under several device profiles.

Each profile (a built-in name, a cost model file or a calibrated device profile, see ``device_profile``) gets its
saturation rate first: the highest rate at which ``saturation_policy`` keeps its mean TTFT within ``ttft_limit``
(1 s, the rule of ``report.saturation_rates``; on a device whose idle prefill is too slow for that, the goodput
SLO's TTFT), found by doubling and then bisecting the rate (``find_saturation``) on the first seed. Then every
policy runs at ``fractions`` of that device's own saturation rate and at the absolute ``rates``, on the same
arrivals per (rate, seed). The report (``comparison_tables``) holds the devices and their saturation rates, each
policy's mean/p99 E2E and TTFT, the KV strategy mix of the paused calls, and why the mix can differ: per device the
time to recompute a typical paused context against swapping it out and back (``swap_vs_compute``). Files:
``compare_devices.{md,json,csv}`` and two plots, every one named as it is written.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

from lamps_jax.bench.compare_devices_plots import latency_figure, mix_figure
from lamps_jax.bench.compare_devices_report import comparison_tables
from lamps_jax.bench.device_profile import ResolvedProfile, resolve_profile
from lamps_jax.bench.metrics import DEFAULT_SLO_SCALE, slo_from_cost
from lamps_jax.bench.plots import save
from lamps_jax.bench.sim_grid import SimPoint, _point_requests, check_kv_capacity, run_grid
from lamps_jax.bench.wording import plural, print_written
from lamps_jax.scheduler.cost_model import CostModel
from lamps_jax.scheduler.waste import recompute_chunks

DEFAULT_FRACTIONS = (0.5, 1.0, 1.25)
DEFAULT_POLICIES = ("vllm", "infercept_swap", "lamps")
SATURATION_POLICY = "vllm"  # the paper's baseline: the rate it sustains is the device's capacity
TTFT_LIMIT_S = 1.0  # report.saturation_rates' rule: past it the waiting queue grows for the whole window
TOLERANCE = 0.05  # bisect until the failing rate is within 5% of the sustained one
START_RATE = 1.0
MIN_RATE = 1e-3
MAX_RATE = 1e5
STRATEGIES = ("preserve", "discard", "swap")
LATE_CHANGES = ("preserve->discard", "preserve->swap")


@dataclasses.dataclass(frozen=True)
class Saturation:
    """The highest rate found sustained, the lowest found not, and every probe (rate, mean TTFT) on the way."""

    sustained: float
    failed: float
    probes: tuple[tuple[float, float], ...]


def find_saturation(
    ttft_at: Callable[[float], float],
    limit: float = TTFT_LIMIT_S,
    tolerance: float = TOLERANCE,
    start: float = START_RATE,
) -> Saturation:
    """Doubles (or halves) the rate from ``start`` until ``ttft_at(rate) <= limit`` holds below and fails above,
    then bisects (geometrically) until failed / sustained <= 1 + ``tolerance``."""
    if not tolerance > 0 or not limit > 0 or not start > 0:
        raise ValueError(f"limit, tolerance and start must be > 0, got {limit}, {tolerance}, {start}")
    probes: list[tuple[float, float]] = []

    def sustains(rate: float) -> bool:
        probes.append((rate, ttft_at(rate)))
        return probes[-1][1] <= limit

    low, high = (start, None) if sustains(start) else (None, start)
    while high is None:
        if low * 2 > MAX_RATE:
            raise ValueError(f"the mean TTFT stays within {limit:g} s up to {low:g} requests/s: no saturation found")
        low, high = (low * 2, None) if sustains(low * 2) else (low, low * 2)
    while low is None:
        if high / 2 < MIN_RATE:
            raise ValueError(f"the mean TTFT exceeds {limit:g} s even at {high:g} requests/s")
        low, high = (high / 2, high) if sustains(high / 2) else (None, high / 2)
    while high / low > 1 + tolerance:
        middle = math.sqrt(low * high)
        low, high = (middle, high) if sustains(middle) else (low, middle)
    return Saturation(low, high, tuple(probes))


def call_contexts(requests: Sequence) -> list[int]:
    """The context (prompt, decoded tokens and earlier results) each request holds when it makes each call."""
    contexts = []
    for request in requests:
        held = request.prompt_tokens
        for segment in request.segments:
            held += segment.num_tokens
            if segment.api_call is not None:
                contexts.append(held)
                held += len(segment.api_call.result_token_ids)
    return contexts


def swap_vs_compute(cost: CostModel, context: int) -> dict:
    """Why a device's strategies differ, for a paused context of ``context`` tokens (no other rows running):
    the seconds to recompute it on return (chunks of B, each over the part rebuilt before it), to swap it out and
    back (2·g(C)), their ratio, and the call durations below which preserving it wastes less than discarding
    (recompute area / C) or swapping it (2·g(C)), as INFERCEPT's waste equations weigh them."""
    recompute, area, rebuilt = 0.0, 0.0, 0
    for size in recompute_chunks(context, cost):
        step = cost.iteration_time(size, rebuilt)
        rebuilt += size
        recompute += step
        area += step * rebuilt
    swap = 2 * cost.swap_time(context)
    return {
        "context_tokens": context,
        "recompute_s": recompute,
        "swap_round_trip_s": swap,
        "swap_over_recompute": swap / recompute if recompute else math.inf,
        "preserve_beats_discard_below_s": area / context,
        "preserve_beats_swap_below_s": swap,
    }


def strategy_mix(row: dict) -> dict:
    """Shares of a run's paused calls by the strategy chosen at the call, and of later changes, with the count."""
    calls = sum(row.get(f"strategy_{s}", 0) for s in STRATEGIES)
    shares = {s: row.get(f"strategy_{s}", 0) / calls if calls else 0.0 for s in (*STRATEGIES, *LATE_CHANGES)}
    return {"calls": calls} | shares


@dataclasses.dataclass(frozen=True)
class Device:
    profile: ResolvedProfile
    kv_capacity_tokens: int | None  # given for a profile that carries none; None: the profile's own
    ttft_limit: float  # seconds of mean TTFT past which the device is saturated
    saturation: Saturation
    why: dict

    def summary(self) -> dict:
        cost = self.profile.cost
        details = self.profile.details or {}
        return {
            "device": self.profile.label,
            "profile": self.profile.source,
            "identity": self.profile.device,
            "model": details.get("model"),
            "dtype": details.get("dtype"),
            "roofline": (details.get("roofline") or {}).get("fractions"),
            "cost_model": cost.to_dict(),
            "kv_capacity_tokens": self.kv_capacity_tokens or cost.kv_capacity_tokens,
            "ttft_limit_s": self.ttft_limit,
            "saturation_rate": self.saturation.sustained,
            "first_failing_rate": self.saturation.failed,
            "saturation_probes": [list(p) for p in self.saturation.probes],
            "why": self.why,
        }


@dataclasses.dataclass(frozen=True)
class Setting:
    """Everything besides the profiles that shapes the numbers; each field is printed with the tables."""

    trace: str = "multi"
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    rates: tuple[float, ...] = ()
    policies: tuple[str, ...] = DEFAULT_POLICIES
    seeds: tuple[int, ...] = (0,)
    window: float = 600.0
    arrivals: int | None = None  # given: each run's window holds this many arrivals on average (arrivals / rate)
    kv_tokens: int | None = None  # KV capacity of the profiles that carry none
    max_model_len: int = 2048
    saturation_policy: str = SATURATION_POLICY
    ttft_limit: float = TTFT_LIMIT_S
    tolerance: float = TOLERANCE

    def __post_init__(self) -> None:
        if not self.fractions and not self.rates:
            raise ValueError("give at least one fraction of saturation (--fractions) or absolute rate (--rates)")
        if any(not (math.isfinite(v) and v > 0) for v in (*self.fractions, *self.rates)):
            raise ValueError(f"fractions and rates must be numbers > 0, got {self.fractions} and {self.rates}")
        if not self.policies or not self.seeds:
            raise ValueError("give at least one policy and one seed")
        check_kv_capacity(self.kv_tokens)
        if self.arrivals is not None and self.arrivals < 1:
            raise ValueError(f"arrivals must be >= 1, got {self.arrivals}")
        for policy in {*self.policies, self.saturation_policy}:  # a bad policy or window fails here
            self.point(policy, 1.0, "gptj-6b-a100", None, self.seeds[0])

    def point(self, policy: str, rate: float, profile: str, kv: int | None, seed: int) -> SimPoint:
        return SimPoint(
            self.trace,
            rate,
            policy,
            profile=profile,
            window=self.window if self.arrivals is None else self.arrivals / rate,
            kv_capacity_tokens=kv,
            seed=seed,
            max_model_len=self.max_model_len,
        )

    def describe(self) -> dict:
        return dataclasses.asdict(self)


def _device(profile: ResolvedProfile, setting: Setting, context: int) -> Device:
    kv = None if profile.cost.kv_capacity_tokens else setting.kv_tokens
    if kv is None and not profile.cost.kv_capacity_tokens:
        raise ValueError(f"profile {profile.label!r} carries no KV capacity: give --kv-tokens")

    def ttft_at(rate: float) -> float:
        point = setting.point(setting.saturation_policy, rate, profile.source, kv, setting.seeds[0])
        return run_grid([point], jobs=1, progress=False)[0].row["ttft_mean"]

    limit = ttft_limit(profile.cost, setting)
    saturation = find_saturation(ttft_at, limit, setting.tolerance)
    print(
        f"{profile.label}: {setting.saturation_policy} sustains {saturation.sustained:.3g} requests/s "
        f"(mean TTFT within {limit:.3g} s; fails at {saturation.failed:.3g}; "
        f"{plural(len(saturation.probes), 'run')})"
    )
    return Device(profile, kv, limit, saturation, swap_vs_compute(profile.cost, context))


def ttft_limit(cost: CostModel, setting: Setting) -> float:
    """The mean TTFT past which a device is saturated: ``setting.ttft_limit``, or on a device too slow for it the
    goodput SLO's TTFT (``slo_from_cost``: ``DEFAULT_SLO_SCALE`` x the unloaded prefill of a max_model_len prompt)."""
    return max(setting.ttft_limit, slo_from_cost(cost, setting.max_model_len, DEFAULT_SLO_SCALE).ttft)


def _points(devices: list[Device], setting: Setting) -> list[tuple[Device, str, SimPoint]]:
    """Per device, rate, seed and policy: the run and how its rate was set."""
    runs = []
    for device in devices:
        rates = {f * device.saturation.sustained: f"{f:g}x saturation" for f in setting.fractions}
        rates |= {r: "absolute" for r in setting.rates if r not in rates}
        for rate, set_as in rates.items():
            for seed in setting.seeds:
                for policy in setting.policies:
                    point = setting.point(policy, rate, device.profile.source, device.kv_capacity_tokens, seed)
                    runs.append((device, set_as, point))
    return runs


def compare_devices(
    profiles: Sequence[str], setting: Setting, jobs: int | None = None, output_dir: Path | None = None
) -> dict:
    """Finds each profile's saturation rate, runs the grid, prints the report and, given a folder, writes it."""
    resolved = [resolve_profile(p) for p in profiles]
    if len(resolved) < 2:
        raise ValueError(f"compare-devices needs at least two profiles, got {len(resolved)}")
    labels = [p.label for p in resolved]
    if len(set(labels)) < len(labels) or len({p.source for p in resolved}) < len(resolved):
        raise ValueError(f"each profile must be given once, with a distinct name: got {', '.join(labels)}")
    first = setting.point(setting.saturation_policy, 1.0, resolved[0].source, setting.kv_tokens, setting.seeds[0])
    contexts = call_contexts(_point_requests(first))
    context = int(statistics.median(contexts)) if contexts else setting.max_model_len
    devices = [_device(p, setting, context) for p in resolved]
    runs = _points(devices, setting)
    results = run_grid([point for _, _, point in runs], jobs)
    rows = [
        result.row
        | {
            "device": device.profile.label,
            "rate_set_as": set_as,
            "of_saturation": result.point.rate / device.saturation.sustained,
            "saturation_rate": device.saturation.sustained,
        }
        | {f"share_{k}": v for k, v in strategy_mix(result.row).items() if k != "calls"}
        | {"paused_calls": strategy_mix(result.row)["calls"]}
        for (device, set_as, _), result in zip(runs, results)
    ]
    summaries = [d.summary() for d in devices]
    report = {"setting": setting.describe(), "devices": summaries, "rows": rows}
    markdown = comparison_tables(summaries, rows, setting.describe())
    print(markdown)
    if output_dir is not None:
        print_written(write_report(report, markdown, output_dir))
    return report


def write_report(report: dict, markdown: str, output_dir: Path) -> list[Path]:
    """``compare_devices.{md,json,csv}`` and the latency and strategy-mix plots; returns their paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = [output_dir / f"compare_devices.{ext}" for ext in ("md", "json", "csv")]
    paths[0].write_text(markdown)
    paths[1].write_text(json.dumps(report, indent=2, default=str) + "\n")
    rows = report["rows"]
    with paths[2].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=sorted({k for row in rows for k in row}))
        writer.writeheader()
        writer.writerows(rows)
    paths.append(save(latency_figure(rows, report["setting"]), output_dir / "compare_devices_latency.png"))
    paths.append(save(mix_figure(rows, report["setting"]), output_dir / "compare_devices_mix.png"))
    return paths

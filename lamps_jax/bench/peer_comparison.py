"""``lamps-jax bench-peers``: LAMPS+ against today's peers, at loads set by the strongest peer's saturation.

Per workload (the INFERCEPT traces ``multi`` and ``one``, and generated coding-agent sessions ``agent``), five
stages on the simulated engine, each a grid of ``simulate_comparison`` with its own folder, tables and plots:

1. ``saturation``: every peer on a rate sweep (seed 0). A peer sustains a rate while its mean TTFT stays within
   1 s there and at every lower rate (``report.saturation_rates``); the strongest peer's highest such rate is the
   workload's saturation rate.
2. ``compare``: every peer and LAMPS+ at ``LOAD_FACTORS`` x that rate, on every seed.
3. ``ablation``: LAMPS+ with each switch off in turn, at the middle load.
4. ``predicted``: LAMPS+ with and without ``reconsider`` when call durations are predicted (per-type means, as a
   live server must) rather than known, at the middle load: the case that switch is for.
5. ``noise``: LAMPS+ with oracle lengths and with ``NOISE`` relative noise on them, at every load.

A stage left out (``stages``) is read from the results an earlier run wrote into the same folder, so one stage can
be rerun, or the goals table rebuilt from the results alone.

Then ``goals.md`` (with the rows of workloads run earlier into the same folder): per workload and load, LAMPS+'s
mean and p99 E2E against the best peer's, its goodput against the best peer's, and its noisy run against its
oracle one, each with the issue's target and whether it is met.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lamps_jax.bench.comparison import simulate_comparison
from lamps_jax.bench.report import group_rows, saturation_rates
from lamps_jax.bench.wording import print_written
from lamps_jax.scheduler.policies.lamps_plus import SWITCHES

PEERS = ("vllm_apc", "infercept", "infercept_swap", "lamps", "augserve", "continuum", "autellix")
OURS = "lamps_plus"
LOAD_FACTORS = (1.0, 1.25, 1.5)
NOISE = 0.3  # relative noise of predicted lengths in the robustness check
MEAN_E2E_TARGET = 0.85  # LAMPS+ mean E2E at most this fraction of the best peer's
GOODPUT_TARGET = 1.3  # LAMPS+ goodput at least this multiple of the best peer's
NOISE_TARGET = 0.10  # LAMPS+ with noisy lengths within this fraction of itself with oracle lengths
STAGES = ("saturation", "compare", "ablation", "predicted", "noise")
GOAL_LINES = "goals_rows.md"  # per workload folder: its rows of the goals table, which gathers every workload's


@dataclass(frozen=True)
class Workload:
    trace: str
    sweep: tuple[float, ...]  # the saturation sweep's rates (requests or sessions per second)
    max_model_len: int
    window: float  # arrival window, seconds
    agent_token_scale: float | None = None  # agent sessions: the factor on their token counts


# Sweeps that saturate every peer (measured). Agent sessions last hours (human waits): 30 s windows, and tokens at
# 1/8 (a 8,192-token context is 65k real tokens), so that a few sessions per second fill the KV memory; at 1/32 it
# took over 16 sessions/s, and the runs ten times as long.
WORKLOADS = {
    "multi": Workload("multi", (6, 8, 10, 12, 14, 16), 2048, 60.0),
    "one": Workload("one", (10, 15, 20, 25, 30), 2048, 60.0),
    "agent": Workload("agent", (1, 2, 3, 4, 6), 8192, 30.0, agent_token_scale=1 / 8),
}


def run_peer_comparison(
    output_dir: Path,
    workloads: Sequence[str] = tuple(WORKLOADS),
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    window: float | None = None,
    jobs: int | None = None,
    stages: Sequence[str] = STAGES,
) -> list[str]:
    """Runs the ``stages`` per workload under ``output_dir/<workload>/<stage>`` (arrival window: ``window``
    seconds, else the workload's own); a stage not run is read from the results an earlier run left there. Writes
    and returns the goals table's lines."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage {', '.join(unknown)}: choose from {', '.join(STAGES)}")
    for name in workloads:
        _run_workload(name, output_dir / name, seeds, window, jobs, stages)
    lines = [line for name in WORKLOADS for line in _read_goal_lines(output_dir / name)]  # earlier runs' too
    table = goals_table(lines)
    (output_dir / "goals.md").write_text(table)
    print("\n" + table)
    print_written([output_dir / "goals.md"])
    return lines


def _run_workload(
    name: str, folder: Path, seeds: Sequence[int], window: float | None, jobs: int | None, stages: Sequence[str]
) -> None:
    """One workload's stages under ``folder``, and its rows of the goals table."""
    workload = WORKLOADS[name]
    fixed = {
        "trace": [workload.trace],
        "window": [window or workload.window],
        "max_model_len": [workload.max_model_len],
    }
    if workload.agent_token_scale is not None:
        fixed["agent_token_scale"] = [workload.agent_token_scale]

    def stage(stage_name: str, title: str, policies: list[str], stage_seeds: Sequence[int], **grid) -> list[dict]:
        if stage_name not in stages:
            return _read_stage(folder / stage_name)
        print(f"\n== {name}: {title} ==")
        return simulate_comparison(policies, stage_seeds, jobs, folder / stage_name, **grid, **fixed)

    swept = stage("saturation", f"saturation sweep of {', '.join(PEERS)}", list(PEERS), (0,), rate=workload.sweep)
    saturated = saturation_rates(swept, PEERS)
    if not saturated:
        _write_goal_lines(folder, [f"| {name} | no peer saturates within {workload.sweep}/s: widen the sweep |"])
        return
    peer, rate = next(iter(saturated.values()))
    rates = [round(rate * f, 3) for f in LOAD_FACTORS]
    print(f"\n{name}: {peer} sustains {rate:g}/s; loads {rates}")
    compared = stage("compare", f"{OURS} and the peers at {rates}", [*PEERS, OURS], seeds, rate=rates)
    ablations = [OURS, *(f"{OURS}-no_{s}" for s in SWITCHES)]
    stage("ablation", f"{OURS} ablations at {rates[1]}/s", ablations, seeds, rate=[rates[1]])
    stage(
        "predicted",
        f"{OURS} with and without reconsider, call times predicted (type means), at {rates[1]}/s",
        [OURS, f"{OURS}-no_reconsider"],
        seeds,
        rate=[rates[1]],
        api_time_source=["type_mean"],
    )
    noisy = stage(
        "noise", f"{OURS} with {NOISE:.0%} length noise", [OURS], seeds, rate=rates, length_noise=[0.0, NOISE]
    )
    _write_goal_lines(folder, goal_lines(name, peer, rate, compared, noisy))


def _read_stage(folder: Path) -> list[dict]:
    path = folder / "comparison.json"
    if not path.is_file():
        raise FileNotFoundError(f"no results of stage {folder.name!r} in {folder}: run that stage first")
    return json.loads(path.read_text())


def _write_goal_lines(folder: Path, lines: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / GOAL_LINES).write_text("".join(f"{line}\n" for line in lines))


def _read_goal_lines(folder: Path) -> list[str]:
    path = folder / GOAL_LINES
    return path.read_text().splitlines() if path.is_file() else []


def _means(rows: list[dict], metric: str) -> dict[tuple, float]:
    """Per (rate, policy, noise): the metric's mean over seeds."""
    groups = group_rows(rows, ["rate", "policy", "length_noise"])
    return {key: statistics.fmean(r[metric] for r in group) for key, group in groups.items()}


def goal_lines(name: str, peer: str, rate: float, compared: list[dict], noisy: list[dict]) -> list[str]:
    """One Markdown row per load: LAMPS+ against the best peer on each goal, with the bound no scheduler passes.

    The mean E2E ratio cannot fall below LAMPS+'s mean API time over the best peer's mean E2E (an engine that added
    no time at all; the calls' durations are the workload's), and the goodput ratio cannot pass LAMPS+'s throughput
    over the best peer's goodput (every finished request meeting the SLO)."""
    metrics = ("e2e_mean", "e2e_p99", "goodput_rps", "delay_mean", "throughput_rps")
    e2e, p99, goodput, delay, throughput = (_means(compared, m) for m in metrics)
    noise_e2e = _means(noisy, "e2e_mean")
    lines = []
    for factor, load in zip(LOAD_FACTORS, sorted({k[0] for k in e2e})):
        peers = {p: (e2e[(load, p, 0.0)], p99[(load, p, 0.0)], goodput[(load, p, 0.0)]) for p in PEERS}
        best_mean = min(peers, key=lambda p: peers[p][0])
        best_p99 = min(peers, key=lambda p: peers[p][1])
        best_goodput = max(peers, key=lambda p: peers[p][2])
        key = (load, OURS, 0.0)
        ours = (e2e[key], p99[key], goodput[key])
        mean_ratio = ours[0] / peers[best_mean][0]
        mean_floor = (e2e[key] - delay[key]) / peers[best_mean][0]
        best_goodput_rps = peers[best_goodput][2]
        goodput_ratio = ours[2] / best_goodput_rps if best_goodput_rps else float("inf")
        goodput_ceiling = throughput[key] / best_goodput_rps if best_goodput_rps else float("inf")
        drift = noise_e2e[(load, OURS, NOISE)] / noise_e2e[key] - 1
        cells = [
            name,
            f"{factor:g}x {peer}'s {rate:g} = {load:g}/s",
            f"{ours[0]:.4g} vs {best_mean} {peers[best_mean][0]:.4g}: {mean_ratio:.3f} "
            f"{_mark(mean_ratio <= MEAN_E2E_TARGET)}; API time alone {mean_floor:.3f}",
            f"{ours[1]:.4g} vs {best_p99} {peers[best_p99][1]:.4g} {_mark(ours[1] <= peers[best_p99][1])}",
            f"{ours[2]:.3g} vs {best_goodput} {best_goodput_rps:.3g}: {goodput_ratio:.2f}x "
            f"{_mark(goodput_ratio >= GOODPUT_TARGET)}; at most {goodput_ceiling:.2f}x",
            f"{drift:+.1%} {_mark(abs(drift) <= NOISE_TARGET)}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _mark(met: bool) -> str:
    return "(met)" if met else "(missed)"


def goals_table(lines: list[str]) -> str:
    caption = (
        f"Goals. {OURS} against the best of {', '.join(PEERS)} per metric (each metric's best peer may differ), "
        f"means over the seeds of the compare stage. Targets: mean E2E <= {MEAN_E2E_TARGET}x the best peer's; "
        f"p99 E2E <= the best peer's; goodput >= {GOODPUT_TARGET}x the best peer's; with {NOISE:.0%} length noise, "
        f"mean E2E within {NOISE_TARGET:.0%} of {OURS} with oracle lengths. Load: a multiple of the rate the "
        "strongest peer sustains (mean TTFT <= 1 s) in the saturation stage. Bounds no scheduler passes: the mean "
        f"E2E ratio of an engine that added no time to the API calls ({OURS}'s mean API time over the best peer's "
        f"mean E2E), and the goodput ratio if every request {OURS} finished met the SLO ({OURS}'s throughput over "
        "the best peer's goodput)."
    )
    header = "| workload | load | mean E2E s | p99 E2E s | goodput/s | noise drift |\n|---|---|---|---|---|---|\n"
    return f"{caption}\n\n{header}" + "\n".join(lines) + "\n"

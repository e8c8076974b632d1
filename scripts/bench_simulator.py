"""Simulator speed before and after a change: simulated iterations per wall second on the same points, in one run.

Each point runs in a fresh process under two source trees: this checkout, and a git revision checked out
into a temporary worktree (``--baseline``). This checkout runs each point twice: with its own defaults and
with ``max_num_seqs=32`` (the cap an older simulator applied), so a speed change is not mistaken for a
change in how much work a run holds. Writes a captioned Markdown table and the JSON it comes from.

    python scripts/bench_simulator.py --baseline bc4adcc --output bench_results/simulator
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from lamps_jax.workload.traces import TRACES_ENV, traces_dir

REPO = Path(__file__).resolve().parents[1]
RUN_POINT = """
import json, sys
from lamps_jax.bench.sim_grid import SimPoint, run_point
trace, rate, policy, window, extra = sys.argv[1], float(sys.argv[2]), sys.argv[3], float(sys.argv[4]), sys.argv[5]
row = run_point(SimPoint(trace, rate, policy, window=window, **json.loads(extra))).row
print(json.dumps({k: row[k] for k in ("iterations", "wall_seconds", "finished", "preemptions")}))
"""


def run_point(tree: Path, trace: str, rate: float, policy: str, window: float, extra: dict) -> dict:
    env = os.environ | {"PYTHONPATH": str(tree), TRACES_ENV: str(traces_dir())}  # a worktree has no shared/ beside it
    args = [sys.executable, "-c", RUN_POINT, trace, str(rate), policy, str(window), json.dumps(extra)]
    result = subprocess.run(args, env=env, cwd=tree, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="git revision to compare against")
    parser.add_argument("--trace", default="multi")
    parser.add_argument("--rates", default="4,7", help="request rates: below and past saturation")
    parser.add_argument("--policies", default="vllm,infercept,lamps")
    parser.add_argument("--window", type=float, default=120.0, help="arrival window, simulated seconds")
    parser.add_argument("--output", type=Path, default=Path("bench_results/simulator"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        baseline = Path(tmp) / "baseline"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(baseline), args.baseline], check=True
        )
        try:
            trees = [
                (f"baseline {args.baseline}", baseline, {}),
                ("this checkout, max_num_seqs=32", REPO, {"max_num_seqs": 32}),
                ("this checkout, defaults", REPO, {}),
            ]
            rates = [float(r) for r in args.rates.split(",")]
            for rate, policy, (label, tree, extra) in itertools.product(rates, args.policies.split(","), trees):
                measured = run_point(tree, args.trace, rate, policy, args.window, extra)
                rows.append({"rate": rate, "policy": policy, "code": label} | measured)
                rows[-1]["iterations_per_s"] = measured["iterations"] / measured["wall_seconds"]
                print(json.dumps(rows[-1]), flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(baseline)], check=True)
    args.output.mkdir(parents=True, exist_ok=True)
    caption = (
        f"Simulator speed: simulated iterations per wall second, trace {args.trace}, {args.window:g} s arrival window, "
        f"seed 0, one process per point on this machine ({os.cpu_count()} cores), measured in one run."
    )
    lines = [caption, "", "| rate/s | policy | code | iterations | wall s | iterations/s | finished | preempted |"]
    lines.append("|---|---|---|---|---|---|---|---|")
    for r in rows:
        lines.append(
            f"| {r['rate']:g} | {r['policy']} | {r['code']} | {r['iterations']} | {r['wall_seconds']:.1f} "
            f"| {r['iterations_per_s']:.0f} | {r['finished']} | {r['preemptions']} |"
        )
    (args.output / "simulator_speed.md").write_text("\n".join(lines) + "\n")
    (args.output / "simulator_speed.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.output / 'simulator_speed.md'}\nwrote {args.output / 'simulator_speed.json'}")


if __name__ == "__main__":
    main()

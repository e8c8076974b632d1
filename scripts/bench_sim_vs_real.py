"""How well a calibrated profile predicts the real engine: the same arrivals served by the real model (wall clock)
and by the simulator under the profile (virtual clock), per policy; the error of the simulated mean E2E and TTFT.

The arrivals are those of ``lamps-jax bench --mode real``: the first ``--num-requests`` Poisson arrivals at
``--rate`` from the trace, scaled down as that mode scales them (prompts to 96 tokens, each segment and call
result to 24, call durations x 0.02), served under its engine setting (16 running requests, 128-token budget,
pages of 16 tokens, 24 MiB of KV, 256 host pages). The simulator gets the same scheduler setting, the real
engine's KV pages, and the profile with its token budget set to the real engine's 128.
Prints a captioned Markdown table; ``--output DIR`` also writes ``sim_vs_real.{md,json}``.

python scripts/bench_sim_vs_real.py --profile docs/profiles/cpu-tiny.json --model tiny --num-requests 20
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from lamps_jax.bench.comparison import _real_config, exact_poisson_arrivals, scaled_request
from lamps_jax.bench.device_profile import resolve_profile
from lamps_jax.bench.harness import run_workload
from lamps_jax.bench.sim_grid import PAGE_SIZE
from lamps_jax.engine import LLMEngine
from lamps_jax.model.registry import load_model
from lamps_jax.sim.engine import simulated_engine
from lamps_jax.workload.traces import DEFAULT_TRACES, load_trace

TIME_SCALE, MAX_PROMPT, MAX_SEGMENT = 0.02, 96, 24  # real_comparison's defaults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="docs/profiles/cpu-tiny.json", help="profile name or file")
    parser.add_argument("--model", default="tiny", help="the model the profile was calibrated on")
    parser.add_argument("--trace", default="multi")
    parser.add_argument("--num-requests", type=int, default=20)
    parser.add_argument("--rate", type=float, default=2.0, help="requests/s")
    parser.add_argument("--policies", default="vllm,infercept,lamps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="folder for sim_vs_real.{md,json}")
    args = parser.parse_args()

    profile = resolve_profile(args.profile)
    requests = [
        scaled_request(r, MAX_PROMPT, MAX_SEGMENT, TIME_SCALE)
        for r in load_trace(DEFAULT_TRACES.get(args.trace, args.trace))
    ]
    arrivals = exact_poisson_arrivals(requests, args.rate, args.num_requests, args.seed)
    loaded = load_model(args.model)
    rows, runner = [], None
    for policy in args.policies.split(","):
        engine = LLMEngine(loaded, _real_config(policy, None), runner=runner)
        runner = engine.runner
        real = run_workload(engine, arrivals).metrics()
        config = engine.config
        cost = dataclasses.replace(profile.cost, token_budget=config.scheduler.max_num_batched_tokens)
        kv_tokens = engine.page_pool.num_usable * PAGE_SIZE
        sim_engine = simulated_engine(cost, config.scheduler, kv_tokens, PAGE_SIZE, config.max_model_len)
        sim = run_workload(sim_engine, arrivals, progress=False).metrics()
        rows.append(
            {"policy": policy, "kv_tokens": kv_tokens}
            | {f"{k}_{side}": m[k] for side, m in (("real", real), ("sim", sim)) for k in ("e2e_mean", "ttft_mean")}
            | {
                "e2e_error": sim["e2e_mean"] / real["e2e_mean"] - 1,
                "ttft_error": sim["ttft_mean"] / real["ttft_mean"] - 1,
            }
        )
        print(f"{policy}: real mean E2E {real['e2e_mean']:.3f} s, simulated {sim['e2e_mean']:.3f} s")
    caption = (
        f"Simulated vs real mean E2E and TTFT: {args.model} on {loaded.config.dtype}, profile {profile.label}, "
        f"{args.num_requests} arrivals at {args.rate:g} requests/s from {args.trace} (seed {args.seed}), scaled as "
        f"bench --mode real scales them (prompts <= {MAX_PROMPT}, segments <= {MAX_SEGMENT} tokens, calls x "
        f"{TIME_SCALE:g}); error = simulated / real - 1."
    )
    lines = [caption, "", "| policy | real E2E s | sim E2E s | E2E error | real TTFT s | sim TTFT s | TTFT error |"]
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    lines += [
        f"| {r['policy']} | {r['e2e_mean_real']:.3f} | {r['e2e_mean_sim']:.3f} | {r['e2e_error']:+.1%} | "
        f"{r['ttft_mean_real']:.3f} | {r['ttft_mean_sim']:.3f} | {r['ttft_error']:+.1%} |"
        for r in rows
    ]
    print("\n".join(lines))
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "sim_vs_real.md").write_text("\n".join(lines) + "\n")
        (args.output / "sim_vs_real.json").write_text(json.dumps({"caption": caption, "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.output / 'sim_vs_real.md'}\nwrote {args.output / 'sim_vs_real.json'}")


if __name__ == "__main__":
    main()

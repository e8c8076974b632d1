"""``lamps-jax bench-serve``: its flags and checks, the spawned ``lamps-jax serve`` per policy, and the runs.

Per rate, seed and policy the workload runs in-process, then over HTTP against a fresh server (or ``--url``'s);
the load itself is ``serve_load.py``, the tables ``serve_report.py``. Importing this module loads neither JAX nor
httpx (the CLI builds its parser from it).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from lamps_jax.bench.serve_load import (
    ENGINE_FLAGS,
    REAL_MAX_PROMPT,
    REAL_MAX_SEGMENT,
    REAL_TIME_SCALE,
    EngineSettings,
    LoadResult,
    TraceSlice,
    conversations,
    run_load,
)
from lamps_jax.bench.server_process import LOOPBACK, check_url, free_port, spawned_server
from lamps_jax.model.sources import check_model_source
from lamps_jax.scheduler.policies import policy_class
from lamps_jax.workload.spec import WorkloadRequest


# ---- the server command ----------------------------------------------------------------------------------------------
def serve_command(model: str, policy: str, port: int, engine: EngineSettings) -> list[str]:
    return [
        sys.executable,
        *("-m", "lamps_jax.cli", "serve", "--model", model, "--policy", policy),
        *("--host", LOOPBACK, "--port", str(port)),
        *("--warmup", "full"),  # every step bucket ready before the first measured request
        *engine.serve_flags(),
    ]


# ---- the command --------------------------------------------------------------------------------------------------
def add_bench_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``lamps-jax bench-serve``; the engine's and the trace scaling's default to bench --mode real's."""
    parser.add_argument("--model", default="smollm2-135m", help="preset (tiny), smollm2-135m, a .gguf or a directory")
    parser.add_argument("--trace", default="multi", help="multi, one or a trace file")
    parser.add_argument("--rates", default="1,2", help="request rates (req/s), one run per rate, seed and policy")
    parser.add_argument("--policies", default="vllm,infercept,lamps", help="policies, each on a fresh server")
    parser.add_argument("--num-requests", type=int, default=12, help="requests (conversations) per run")
    parser.add_argument("--seeds", default="0", help="arrival seeds (several: mean ± 95%% CI over them)")
    parser.add_argument("--time-limit", type=float, default=600.0, help="wall-clock seconds per run before it stops")
    parser.add_argument("--url", help="a running server on this machine to load instead (one policy: the one it runs)")
    parser.add_argument("--health-timeout", type=float, default=600.0, help="seconds a spawned server has to start")
    parser.add_argument("--output", type=Path, default=Path("bench_results/serve"), help="folder for the results")
    scaling = parser.add_argument_group("trace scaling (as bench --mode real)")
    scaling.add_argument("--time-scale", type=float, default=REAL_TIME_SCALE, help="factor on every API call's time")
    scaling.add_argument("--max-prompt-tokens", type=int, default=REAL_MAX_PROMPT, help="prompt length cap")
    scaling.add_argument(
        "--max-segment-tokens", type=int, default=REAL_MAX_SEGMENT, help="cap on a turn's tokens and on a call's result"
    )
    engine = parser.add_argument_group("engine (the spawned servers' and the in-process engine's)")
    defaults = EngineSettings()
    for flag, name, kind, help_text in ENGINE_FLAGS:
        metavar = flag.removeprefix("--").upper().replace("-", "_")
        typed = {"action": argparse.BooleanOptionalAction} if kind is bool else {"type": kind, "metavar": metavar}
        engine.add_argument(flag, dest=name, default=getattr(defaults, name), help=help_text, **typed)


def _numbers(text: str, flag: str, kind: type = float) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated numbers, got {text!r}") from None
    if not values:
        raise ValueError(f"{flag} needs at least one value")
    return values


def _checked(args: argparse.Namespace) -> tuple[list[str], list[float], list[int]]:
    """Policies, rates and seeds; every check that needs no model and no server."""
    check_model_source(args.model)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    if not policies:
        raise ValueError(f"--policies names no policy: {args.policies!r}")
    for policy in policies:
        policy_class(policy)  # an unknown policy fails here
    if args.url is not None and len(policies) != 1:
        raise ValueError(f"--url loads one server: give --policies the one policy it runs, got {args.policies!r}")
    rates = _numbers(args.rates, "--rates")
    if any(not (math.isfinite(r) and r > 0) for r in rates):
        raise ValueError(f"request rates must be numbers > 0, got {args.rates!r}")
    if args.num_requests < 1:
        raise ValueError(f"--num-requests must be >= 1, got {args.num_requests}")
    if not (args.time_limit > 0 and args.health_timeout > 0):
        raise ValueError("--time-limit and --health-timeout must be > 0 seconds")
    return policies, rates, _numbers(args.seeds, "--seeds", int)


def _check_session_ttl(workloads: Iterable[Sequence[WorkloadRequest]], ttl: float) -> None:
    longest = max(
        (s.api_call.duration for w in workloads for r in w for s in r.segments if s.api_call is not None), default=0.0
    )
    if ttl <= longest:
        raise ValueError(
            f"--session-ttl {ttl:g} s does not outlast the workload's longest API call ({longest:.3g} s): sessions "
            "would be released between turns"
        )


def _over_http(args: argparse.Namespace, policy: str, engine: EngineSettings, convs, label: str) -> LoadResult:
    if args.url is not None:
        return run_load(args.url, convs, args.time_limit, label)
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    print(f"starting lamps-jax serve --policy {policy} at {url}")
    with spawned_server(serve_command(args.model, policy, port, engine), url, args.health_timeout):
        return run_load(url, convs, args.time_limit, label)


def _setting(args: argparse.Namespace, engine: EngineSettings, rates, seeds, device_pages: int) -> dict:
    server = "a fresh lamps-jax serve per run" if args.url is None else f"{args.url} (its settings not checked)"
    return {
        "model": args.model,
        "trace": args.trace,
        "rates_per_s": ", ".join(f"{r:g}" for r in rates),
        "requests_per_run": args.num_requests,
        "arrival_seeds": ", ".join(map(str, seeds)),
        "api_time_scale": args.time_scale,
        "max_prompt_tokens": args.max_prompt_tokens,
        "max_segment_tokens": args.max_segment_tokens,
        **{name: getattr(engine, name) for _, name, _, _ in ENGINE_FLAGS},
        "device_kv_pages": device_pages,
        "time_limit_s": args.time_limit,
        "server": server,
        "clients": "streamed /v1/completions, greedy, ignore_eos, return_token_ids, session_id per conversation",
    }


def _run_line(policy: str, rate: float, seed: int, in_process: dict, http: dict, n: int) -> str:
    def side(name: str, values: dict) -> str:
        cut = ", cut short" if values["cut_short"] else ""
        return (
            f"{name} {values['finished']} of {n} finished in {values['wall_s']:.1f} s{cut} "
            f"(mean E2E {values['e2e_mean']:.2f} s, mean TTFT {values['ttft_mean']:.2f} s)"
        )

    reuse = f"KV reused by {http['kv_reused_turns']} of {http['later_turns']} later turns"
    return f"{policy} at {rate:g} req/s, seed {seed}: {side('in-process', in_process)}; {side('HTTP', http)}; {reuse}"


def run_bench_serve(args: argparse.Namespace) -> None:
    """Per rate, seed and policy: the workload in-process, then over HTTP; prints and writes the tables."""
    policies, rates, seeds = _checked(args)
    engine = EngineSettings(**{name: getattr(args, name) for _, name, _, _ in ENGINE_FLAGS})
    for policy in policies:
        engine.config(policy)  # a bad engine setting fails here, before anything loads
    if args.url is not None:
        check_url(args.url)
    slice_ = TraceSlice(args.trace, args.num_requests, args.time_scale, args.max_prompt_tokens, args.max_segment_tokens)
    workloads = {(rate, seed): slice_.arrivals(rate, seed) for rate in rates for seed in seeds}
    _check_session_ttl(workloads.values(), engine.session_ttl)

    from lamps_jax.bench.harness import run_workload  # late: these import the engine (JAX) and scipy
    from lamps_jax.bench.serve_report import (
        comparison_row,
        http_summary,
        in_process_summary,
        serve_markdown,
        write_serve_results,
    )
    from lamps_jax.bench.wording import plural, print_written
    from lamps_jax.engine import LLMEngine
    from lamps_jax.model.registry import load_model

    loaded = load_model(args.model, dtype=engine.dtype, seed=engine.engine_seed)
    print(
        f"{plural(args.num_requests, 'request')} per run at {', '.join(f'{r:g}' for r in rates)} req/s under "
        f"{plural(len(policies), 'policy', 'policies')}, in-process and over HTTP"
    )
    rows, runner, device_pages = [], None, 0
    for (rate, seed), workload in workloads.items():
        convs = conversations(workload, loaded.config.vocab_size)
        for policy in policies:
            llm_engine = LLMEngine(loaded, engine.config(policy), runner=runner)  # one runner: compiled once
            runner, device_pages = llm_engine.runner, llm_engine.page_pool.num_usable
            result = run_workload(llm_engine, workload, max_clock=args.time_limit)
            in_process = in_process_summary(result, len(workload))
            load = _over_http(args, policy, engine, convs, f"{policy} over HTTP")
            http = http_summary(load)
            point = {"trace": args.trace, "rate": rate, "seed": seed, "policy": policy, "requests": len(workload)}
            rows.append(comparison_row(point, http, in_process))
            print(_run_line(policy, rate, seed, in_process, http, len(workload)))
            for error in dict.fromkeys(log.error for log in load.logs if log.error is not None):
                print(f"  HTTP error: {error}", file=sys.stderr)
    setting = _setting(args, engine, rates, seeds, device_pages)
    print(serve_markdown(rows, setting))
    print_written(write_serve_results(rows, setting, args.output))

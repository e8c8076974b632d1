"""The ``lamps-jax`` command line: its arguments are checked before JAX or a model loads, then the command runs
(the parser is in ``cli_parser.py``)."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
from collections.abc import Callable

from lamps_jax.bench.prompts import QUESTIONS
from lamps_jax.cli_parser import build_parser
from lamps_jax.config import CacheConfig, EngineConfig, SchedulerConfig
from lamps_jax.model.sources import check_model_source
from lamps_jax.predictors import commands as length_predictor_commands
from lamps_jax.request import SamplingParams
from lamps_jax.scheduler.policies import policy_class


def _engine_config(args: argparse.Namespace) -> EngineConfig:
    return EngineConfig(
        cache=CacheConfig(page_size=args.page_size, kv_memory_bytes=args.kv_memory_mib * 2**20),
        scheduler=SchedulerConfig(
            policy=args.policy,
            max_num_seqs=args.max_num_seqs,
            max_num_batched_tokens=args.max_num_batched_tokens,
            kv_strategy=args.kv_strategy,
            num_host_pages=args.host_kv_pages,
            length_predictor=args.length_predictor,
            enable_prefix_caching=args.enable_prefix_caching,
        ),
        max_model_len=args.max_model_len,
        seed=args.seed,
        tensor_parallel=args.tensor_parallel,
    )


def _check_multihost_args(args: argparse.Namespace) -> None:
    if args.num_processes < 1 or not 0 <= args.process_id < args.num_processes:
        raise ValueError(f"--process-id must be in 0..{args.num_processes - 1} and --num-processes >= 1")
    if args.num_processes > 1 and args.command == "bench" and args.mode != "real":
        raise ValueError("a multi-host bench runs a real model: add --mode real")
    if args.num_processes > 1 and not args.coordinator_address:
        raise ValueError("--num-processes > 1 needs --coordinator-address host:port (process 0's)")
    if args.num_processes > 1 and args.tensor_parallel < args.num_processes:
        raise ValueError("a multi-host run splits the model over every host's devices: --tensor-parallel all of them")


def _run_multihost(args: argparse.Namespace, lead: Callable[[], object], follower_engine: Callable) -> None:
    """Process 0 runs ``lead``; the other processes build the same engine and run its steps until process 0 ends."""
    from lamps_jax import distributed

    distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
    if not distributed.is_leader():
        distributed.follow(follower_engine().runner)
        return
    try:
        lead()
    finally:
        distributed.release_followers()


def _serve_engine_config(args: argparse.Namespace) -> EngineConfig:
    return dataclasses.replace(
        _engine_config(args),
        session_ttl=args.session_ttl,
        api_timeout=args.tool_timeout,
        warmup="full" if args.num_processes > 1 else args.warmup,  # every process must hold every bucket
    )


def _sampling_params(args: argparse.Namespace) -> SamplingParams:
    return SamplingParams(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        stop=tuple(args.stop),
    )


def _run_prompts(args: argparse.Namespace, prompts: list[str], chat: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    from lamps_jax.engine import LLM

    console = Console(stderr=True)
    console.print(f"[dim]loading {args.model} and compiling its serving step ...[/dim]")
    start = time.perf_counter()
    llm = LLM(
        args.model, dataclasses.replace(_engine_config(args), warmup=args.warmup), dtype=args.dtype, seed=args.seed
    )
    ready = "ready to serve" if args.warmup == "background" else "compiled"
    console.print(f"[dim]loaded {args.model} and {ready} in {time.perf_counter() - start:.1f} s[/dim]")
    params = _sampling_params(args)
    console = Console()
    start = time.perf_counter()
    if chat:
        outputs = llm.chat([[{"role": "user", "content": p}] for p in prompts], params)
    else:
        outputs = llm.generate(prompts, params)
    elapsed = time.perf_counter() - start
    served = f"{len(prompts)} request{'s' if len(prompts) != 1 else ''}"
    table = Table(title=f"{served} served concurrently", show_lines=True)
    for column in ("prompt", "output", "tokens", "finish", "TTFT s", "latency s"):
        table.add_column(column)
    for prompt, out in zip(prompts, outputs):
        table.add_row(
            prompt,
            out.text.strip(),
            str(len(out.token_ids)),
            out.finish_reason,
            f"{out.time_to_first_token:.2f}",
            f"{out.latency:.2f}",
        )
    console.print(table)
    num_tokens = sum(len(o.token_ids) for o in outputs)
    console.print(f"generated {num_tokens} tokens in {elapsed:.2f} s: [bold]{num_tokens / elapsed:.1f} tokens/s[/bold]")
    if not llm.engine.runner.warm:
        console.print("[dim]stopping the background warm-up: the compiles under way finish and are stored[/dim]")
    llm.close()


def _floats(text: str) -> list[float]:
    """A comma-separated list of numbers (empty text: an empty list)."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated numbers, got {text!r}") from None


def _kv_capacities(args: argparse.Namespace) -> list[int | None]:
    """KV memory per simulated point: given in tokens, derived from a model and a device, or the profile's."""
    tokens = [int(v) for v in _floats(args.kv_tokens)]
    if args.kv_model is None:
        return tokens or [None]
    if tokens:
        raise ValueError("give the KV memory either as --kv-tokens or as --kv-model, not both")
    from lamps_jax.sim.capacity import kv_capacity_tokens, load_model_config

    model = load_model_config(args.kv_model)
    return [kv_capacity_tokens(model, args.device_memory_gb * 1e9, tensor_parallel=args.tensor_parallel)]


def _on_off(value: str, flag: str) -> bool:
    if value not in ("on", "off"):
        raise ValueError(f"{flag} takes on or off (a list sweeps both), got {value!r}")
    return value == "on"


def _profile_source(profile: str) -> str:
    """What the simulator loads for ``--profile``: a built-in name, a cost model file, or the cost model file
    beside a device profile (``<device>-<model>.report.json``) written by calibrate."""
    from lamps_jax.bench.device_profile import resolve_profile

    return resolve_profile(profile).source


def _sim_sweeps(args: argparse.Namespace, rates: list[float]) -> dict[str, list]:
    """SimPoint field -> the values the command line sweeps (one value: a fixed setting)."""

    def words(text: str) -> list[str]:
        return [v.strip() for v in text.split(",") if v.strip()]

    return {
        "trace": args.trace or ["multi", "one"],
        "rate": rates,
        "profile": [_profile_source(args.profile)],
        "window": [args.window],
        "length_noise": _floats(args.length_noise),
        "starvation_threshold": [int(v) for v in _floats(args.starvation_threshold)],
        "kv_capacity_tokens": _kv_capacities(args),
        "max_num_seqs": [int(v) for v in _floats(args.max_num_seqs)],
        "admission": words(args.admission),
        "admission_watermark": _floats(args.admission_watermark),
        "swap_budget": words(args.swap_budget),
        "decodes_first": [order == "decodes-first" for order in words(args.running_order)],
        "api_time_source": words(args.api_time),
        "starvation_scope": words(args.starvation_scope),
        "score_step": words(args.score_step),
        "final_call": words(args.final_call),
        "enable_prefix_caching": [_on_off(v, "--prefix-caching") for v in words(args.prefix_caching)],
        "max_model_len": [args.max_model_len],
    }


def _models(args: argparse.Namespace) -> list[str]:
    """The models a command will load (checked before anything loads)."""
    if args.command in ("generate", "demo", "serve", "bench-swap", "calibrate"):
        return [args.model]
    if args.command == "bench-engine":
        return args.model or ["smollm2-135m"]
    if args.command == "bench" and args.mode == "real":
        return [args.model]
    return length_predictor_commands.models(args)


def _check_args(args: argparse.Namespace) -> None:
    """Everything that can be checked without JAX or a model: fails in a second, not after loading."""
    for model in _models(args):
        check_model_source(model)
    policies = args.policies.split(",") if args.command == "bench" else [getattr(args, "policy", "fcfs")]
    for policy in policies:
        policy_class(policy)  # an unknown policy fails here
    if args.command in ("generate", "demo"):
        _sampling_params(args)
        _engine_config(args)
        if args.command == "generate" and not all(p.strip() for p in args.prompt):
            raise ValueError("--prompt must not be empty")
    if args.command in ("serve", "bench"):
        _check_multihost_args(args)
    if args.command == "serve":
        _serve_engine_config(args)
        if args.max_waiting < 1:
            raise ValueError(f"--max-waiting must be >= 1, got {args.max_waiting}")
        if args.graceful_shutdown_timeout < 0:
            raise ValueError(f"--graceful-shutdown-timeout must be >= 0, got {args.graceful_shutdown_timeout}")
        if not 0 < args.port < 65536:
            raise ValueError(f"--port must be in 1..65535, got {args.port}")
        if not args.tool_timeout > 0:
            raise ValueError(f"--tool-timeout must be > 0 seconds, got {args.tool_timeout}")
    if args.command == "bench" and not _floats(args.rates):
        raise ValueError("--rates needs at least one request rate")
    if args.command == "bench" and args.mode == "sim":
        orders = args.running_order.split(",")
        if any(o not in ("decodes-first", "admission") for o in orders):
            raise ValueError(f"--running-order takes decodes-first or admission, got {args.running_order!r}")
        _check_sim_points(args)
    if args.command == "compare-devices":
        _device_setting(args)
    if args.command in length_predictor_commands.COMMANDS:
        length_predictor_commands.check(args)
    if args.command == "report" and not args.json.is_file():
        raise FileNotFoundError(f"no such file: {args.json}")
    if args.command == "bench-peers":
        from lamps_jax.bench.peer_comparison import WORKLOADS

        unknown = [w for w in args.workloads.split(",") if w not in WORKLOADS]
        if unknown:
            raise ValueError(f"unknown workload {', '.join(unknown)}: choose from {', '.join(WORKLOADS)}")
        if not _floats(args.seeds) or (args.window is not None and not args.window > 0):
            raise ValueError("bench-peers needs at least one seed and a window > 0 seconds")


def _check_sim_points(args: argparse.Namespace) -> None:
    """Builds one point of every swept value, so a bad setting fails before any run."""
    from lamps_jax.bench.sim_grid import SimPoint

    sweeps = _sim_sweeps(args, _floats(args.rates))
    for field, values in sweeps.items():
        for value in values:
            first = {"trace": sweeps["trace"][0], "rate": sweeps["rate"][0], "policy": args.policies.split(",")[0]}
            SimPoint(**(first | {field: value}))


def _device_setting(args: argparse.Namespace):
    """compare-devices' setting (checked here, before any run)."""
    from lamps_jax.bench.compare_devices import Setting

    return Setting(
        trace=args.trace,
        fractions=tuple(_floats(args.fractions)),
        rates=tuple(_floats(args.rates)),
        policies=tuple(p for p in args.policies.split(",") if p),
        seeds=tuple(int(v) for v in _floats(args.seeds)),
        window=args.window,
        arrivals=args.arrivals,
        kv_tokens=args.kv_tokens,
        max_model_len=args.max_model_len,
        saturation_policy=args.saturation_policy,
        ttft_limit=args.ttft_limit,
    )


def _run(args: argparse.Namespace) -> None:
    if args.command == "generate":
        _run_prompts(args, args.prompt, args.chat)
    elif args.command == "demo":
        _run_prompts(args, list(QUESTIONS[:6]), chat=True)
    elif args.command == "serve":
        from lamps_jax.engine import LLMEngine
        from lamps_jax.server.launch import serve

        follower = functools.partial(
            LLMEngine.from_model, args.model, _serve_engine_config(args), dtype=args.dtype, seed=args.seed
        )
        lead = functools.partial(
            serve,
            args.model,
            _serve_engine_config(args),
            dtype=args.dtype,
            seed=args.seed,
            host=args.host,
            port=args.port,
            served_model_name=args.served_model_name,
            tool_call_parser=args.tool_call_parser,
            tools=[spec for spec in args.tools.split(",") if spec],
            max_waiting=args.max_waiting,
            graceful_shutdown_s=args.graceful_shutdown_timeout,
        )
        _run_multihost(args, lead, follower)
    elif args.command == "bench":
        _run_comparison(args)
    elif args.command == "report":
        from lamps_jax.bench.comparison import rerender

        rerender(args.json)
    elif args.command == "bench-peers":
        from lamps_jax.bench.peer_comparison import run_peer_comparison

        seeds = [int(v) for v in _floats(args.seeds)]
        stages = [stage for stage in args.stages.split(",") if stage]
        run_peer_comparison(args.output, args.workloads.split(","), seeds, args.window, args.jobs, stages)
    elif args.command == "bench-scheduler":
        from lamps_jax.bench.scheduler_overhead import run_scheduler_benchmark

        run_scheduler_benchmark([int(n) for n in _floats(args.waiting)], args.iterations, args.output)
    elif args.command == "calibrate":
        from lamps_jax.bench.calibrate import calibrate

        kv_bytes = None if args.kv_memory_mib is None else args.kv_memory_mib * 2**20
        calibrate(args.model, args.output, args.repeats, args.dtype, kv_bytes)
    elif args.command == "compare-devices":
        from lamps_jax.bench.compare_devices import compare_devices

        compare_devices(args.profiles, _device_setting(args), args.jobs, args.output)
    elif args.command == "bench-serve":
        from lamps_jax.bench.bench_serve import run_bench_serve

        run_bench_serve(args)
    elif args.command in length_predictor_commands.COMMANDS:
        length_predictor_commands.run(args)
    elif args.command == "bench-swap":
        from lamps_jax.bench.swap_throughput import run_swap_benchmark

        run_swap_benchmark(args.model, [int(p) for p in _floats(args.pages)], args.repeats, args.output)
    else:
        from lamps_jax.bench.decode_throughput import run_decode_benchmark

        run_decode_benchmark(
            models=_models(args),
            batch_sizes=[int(b) for b in _floats(args.batch_sizes)],
            max_tokens=args.max_tokens,
            repeats=args.repeats,
            output_dir=args.output,
            num_prompts=args.num_prompts,
            peers=tuple(peer for peer in args.peers.split(",") if peer),
            dtypes=tuple(dtype for dtype in args.dtypes.split(",") if dtype),
            prompt_tokens=args.prompt_tokens,
        )


def _run_comparison(args: argparse.Namespace) -> None:
    from lamps_jax.bench.comparison import real_comparison, simulate_comparison

    rates = _floats(args.rates)
    policies = args.policies.split(",")
    seeds = [int(v) for v in _floats(args.seeds)]
    if args.mode == "sim":
        simulate_comparison(
            policies,
            seeds=seeds,
            jobs=args.jobs,
            output_dir=args.output,
            **_sim_sweeps(args, rates),
        )
    else:
        from lamps_jax.bench.comparison import _real_config
        from lamps_jax.engine import LLMEngine
        from lamps_jax.model.registry import load_model

        kv_tokens = _kv_capacities(args)[0]
        lead = functools.partial(
            real_comparison,
            args.model,
            (args.trace or ["multi"])[0],
            args.num_requests,
            rates[0],
            policies,
            seed=seeds[0],
            output_dir=args.output,
            kv_capacity_tokens=kv_tokens,
            tensor_parallel=args.tensor_parallel,
        )
        config = _real_config(policies[0], kv_tokens, args.tensor_parallel)  # the runner process 0 builds first
        _run_multihost(args, lead, lambda: LLMEngine(load_model(args.model), config))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_args(args)
        _run(args)
    except (ValueError, FileNotFoundError) as err:  # bad input (InvalidRequestError, ModelLoadError included)
        print(f"lamps-jax: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lamps-jax: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

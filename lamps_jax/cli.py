"""The ``lamps-jax`` command line: argument parsing and checks happen before JAX or a model loads."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lamps_jax.bench.prompts import QUESTIONS
from lamps_jax.bench.serve_load import add_bench_serve_arguments, run_bench_serve
from lamps_jax.config import CacheConfig, EngineConfig, SchedulerConfig
from lamps_jax.model.sources import check_model_source
from lamps_jax.predictors import commands as length_predictor_commands
from lamps_jax.request import SamplingParams
from lamps_jax.scheduler.policies import policy_class
from lamps_jax.server.tool_parsers import TOOL_PARSER_NAMES

DESCRIPTION = "Serve augmented LLM requests (requests that pause for API calls) and compare their schedulers."
EXAMPLES = """examples:
  lamps-jax generate --model smollm2-135m --chat --prompt "What is 2+2?"
  lamps-jax demo                      # a few chat prompts served concurrently, with throughput
  lamps-jax serve --model smollm2-135m --port 8000   # an OpenAI-compatible server on 127.0.0.1:8000
  lamps-jax bench --rates 3,4,5,6     # vllm / infercept / sjf / lamps on the real traces, simulated
  lamps-jax bench --trace multi --rates 6 --policies lamps --length-noise 0,0.2,0.4 --seeds 0,1,2   # a sweep
  lamps-jax bench --mode real --rates 2 --policies vllm,infercept,lamps   # the same on SmolLM2, scaled down
  lamps-jax report bench_results/comparison.json   # tables and sweep plot again from a run's rows
  lamps-jax bench-engine              # tokens/s beside Hugging Face and llama.cpp, with rooflines
  lamps-jax bench-serve               # the server under a trace's tool calls: HTTP vs in-process, per policy
  lamps-jax bench-swap                # KV swap GB/s vs plain copies, and step overhead of swaps
  lamps-jax bench-scheduler           # schedule() cost with 100..10,000 waiting requests per policy
  lamps-jax calibrate --model tiny    # fit the cost model f(tokens, context) and g(tokens) on this device
  lamps-jax compare-devices gptj-6b-a100 llama31-8b-h100   # one workload under two device profiles
"""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default and keeps the examples' line breaks."""


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m", help="preset (tiny), smollm2-135m, a .gguf file or a directory")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "int8"],
        help="weights, activations and KV; int8: int8 weights (per-channel scales), float32 activations and KV",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random-init presets and of unseeded sampling")
    p.add_argument("--page-size", type=int, default=16, help="tokens per KV page")
    p.add_argument("--kv-memory-mib", type=int, default=256, help="device memory for KV pages")
    p.add_argument("--max-num-seqs", type=int, default=32, help="requests running at once")
    p.add_argument("--max-num-batched-tokens", type=int, default=256, help="token budget per iteration")
    p.add_argument("--max-model-len", type=int, default=None, help="context limit (default: the model's, <= 2048)")
    p.add_argument("--policy", default="fcfs", help="fcfs, vllm, infercept, sjf, lamps or lamps_no_rank")
    p.add_argument(
        "--kv-strategy",
        default="preserve",
        choices=["preserve", "discard", "swap"],
        help="KV strategy of API calls under the fcfs policy",
    )
    p.add_argument("--host-kv-pages", type=int, default=0, help="host pages for swapped KV (0 = no swapping)")
    p.add_argument(
        "--length-predictor",
        default="oracle",
        help="lamps / lamps_plus output lengths: oracle, oracle-noise:X, mean or learned:PATH (train-predictor's head)",
    )
    p.add_argument(
        "--tensor-parallel", type=int, default=1, help="devices the model and KV are split over (--kv-memory-mib each)"
    )
    p.add_argument(
        "--enable-prefix-caching",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="reuse the KV pages of prompts that start alike (serve: on by default)",
    )


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


def _add_multihost_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--coordinator-address", help="host:port of process 0 for a multi-host run (jax.distributed.initialize)"
    )
    p.add_argument("--num-processes", type=int, default=1, help="engine processes, one per host")
    p.add_argument("--process-id", type=int, default=0, help="this process (0 schedules and serves; others follow)")


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
    return dataclasses.replace(_engine_config(args), session_ttl=args.session_ttl, api_timeout=args.tool_timeout)


def _add_sampling_args(p: argparse.ArgumentParser, max_tokens: int) -> None:
    p.add_argument("--max-tokens", type=int, default=max_tokens, help="tokens to generate per prompt")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="0 = no limit")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")


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
    llm = LLM(args.model, _engine_config(args), dtype=args.dtype, seed=args.seed)
    console.print(f"[dim]loaded {args.model} and compiled in {time.perf_counter() - start:.1f} s[/dim]")
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


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lamps-jax", description=DESCRIPTION, epilog=EXAMPLES, formatter_class=_HelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, formatter_class=_HelpFormatter)

    gen = command("generate", "generate for one or more prompts, served concurrently")
    _add_engine_args(gen)
    _add_sampling_args(gen, max_tokens=64)
    gen.add_argument("--prompt", action="append", required=True, help="prompt (repeatable: served concurrently)")
    gen.add_argument("--chat", action="store_true", help="wrap each prompt in the model's chat template")

    demo = command("demo", "answer a few chat prompts concurrently and print throughput")
    _add_engine_args(demo)
    _add_sampling_args(demo, max_tokens=48)

    serve = command("serve", "an OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions, /metrics)")
    _add_engine_args(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument("--served-model-name", help="the model name clients send (None: the --model value)")
    serve.add_argument(
        "--tool-call-parser",
        choices=TOOL_PARSER_NAMES,
        help="format of the model's tool calls, read from chat outputs (None: chat requests with tools are refused)",
    )
    serve.add_argument(
        "--tools",
        default="",
        help="server-side tools, comma-separated: calculator, clock and module:function entries (default: none)",
    )
    serve.add_argument(
        "--tool-timeout", type=float, default=60.0, help="seconds a server-side tool may run before it counts as failed"
    )
    serve.set_defaults(enable_prefix_caching=True)  # clients that send no session_id still reuse a shared prefix
    serve.add_argument("--max-waiting", type=int, default=1024, help="requests waiting for admission before 503s")
    serve.add_argument(
        "--session-ttl", type=float, default=60.0, help="seconds a session's KV waits for its next turn (session_id)"
    )
    serve.add_argument(
        "--graceful-shutdown-timeout",
        type=int,
        default=10,
        help="seconds in-flight responses get to end on SIGINT/SIGTERM before they are cancelled",
    )
    _add_multihost_args(serve)

    bench = command("bench-engine", "generation throughput beside Hugging Face and llama.cpp, with rooflines")
    bench.add_argument("--model", action="append", help="tiny and/or smollm2-135m (repeatable; default: smollm2-135m)")
    bench.add_argument("--batch-sizes", default="1,8,32", help="prompts per wave (the prompts run in waves)")
    bench.add_argument("--num-prompts", type=int, default=32, help="chat prompts per run, the same for every engine")
    bench.add_argument("--max-tokens", type=int, default=128, help="tokens generated per prompt")
    bench.add_argument(
        "--peers",
        default="hf,llama_cpp",
        help="peers, each in its own process at its defaults: hf (needs torch), llama_cpp (needs llama-cpp-python)",
    )
    bench.add_argument("--repeats", type=int, default=1, help="runs per point (the median is kept)")
    bench.add_argument("--output", type=Path, default=Path("bench_results"), help="folder for the results")

    add_bench_serve_arguments(
        command("bench-serve", "a trace's requests as HTTP clients with client-side API calls, beside in-process")
    )

    swap = command("bench-swap", "KV swap throughput vs plain copies, and its step-time overhead")
    swap.add_argument("--model", default="smollm2-135m", help="model whose KV pages are swapped")
    swap.add_argument("--pages", default="4,16,64", help="page counts to swap (16 tokens each)")
    swap.add_argument("--repeats", type=int, default=5, help="timings per point (the median is kept)")
    swap.add_argument("--output", type=Path, default=Path("bench_results"), help="folder for the results")

    sched = command("bench-scheduler", "schedule() time with many waiting requests, per policy")
    sched.add_argument("--waiting", default="100,1000,10000", help="waiting-queue sizes")
    sched.add_argument("--iterations", type=int, default=50, help="schedule() calls timed per point")
    sched.add_argument("--output", type=Path, default=Path("bench_results"), help="folder for the results")

    compare = command("bench", "policies side by side on a trace (simulated, or real on a model)")
    compare.add_argument("--mode", choices=["sim", "real"], default="sim", help="simulated engine or a real model")
    compare.add_argument(
        "--trace", action="append", help="multi, one, agent (coding-agent sessions) or a trace file (repeatable)"
    )
    compare.add_argument("--rates", default="3,4,5,6", help="request rates (req/s)")
    compare.add_argument("--policies", default="vllm,infercept,sjf,lamps,lamps_no_rank", help="policies to compare")
    compare.add_argument("--window", type=float, default=1800.0, help="arrival window in seconds (sim)")
    compare.add_argument(
        "--profile", default="gptj-6b-a100", help="cost profile: a name, a JSON file, or calibrate's .report.json (sim)"
    )
    compare.add_argument("--length-noise", default="0", help="relative noise of predicted lengths (list: a sweep)")
    compare.add_argument("--starvation-threshold", default="100", help="LAMPS starvation threshold (list: a sweep)")
    compare.add_argument("--kv-tokens", default="", help="KV memory in tokens (list: a sweep); default: the profile's")
    compare.add_argument("--kv-model", help="derive the KV memory from this model (preset or HF config.json) ...")
    compare.add_argument("--device-memory-gb", type=float, default=40.0, help="... on a device of this memory")
    compare.add_argument("--max-num-seqs", default="256", help="running requests at most (sim; list: a sweep)")
    compare.add_argument("--admission", default="auto", help="chunk, whole or auto: the policy's system's (sim; list)")
    compare.add_argument(
        "--admission-watermark", default="0.01", help="whole admission: share of pages kept free (sim; list)"
    )
    compare.add_argument(
        "--swap-budget", default="auto", help="fixed, infercept, overlap, unlimited or auto: the policy's (sim; list)"
    )
    compare.add_argument("--running-order", default="decodes-first", help="decodes-first or admission (sim; list)")
    compare.add_argument("--api-time", default="oracle", help="what policies know of call durations: oracle, type_mean")
    compare.add_argument(
        "--starvation-scope", default="started", help="LAMPS: which waiting requests age: started, all"
    )
    compare.add_argument("--score-step", default="saturated", help="LAMPS score's iteration time: saturated, single")
    compare.add_argument("--prefix-caching", default="off", help="off or on: freed pages stay cached (sim; list)")
    compare.add_argument("--final-call", default="made", help="a trace's last call: made or dropped (sim; list)")
    compare.add_argument(
        "--max-model-len", type=int, default=2048, help="context limit (sim): requests and agent sessions are cut to it"
    )
    compare.add_argument("--model", default="smollm2-135m", help="model for --mode real")
    compare.add_argument(
        "--tensor-parallel",
        type=int,
        default=1,
        help="devices the model is split over: --mode real runs so; --kv-model: KV capacity of that many devices",
    )
    _add_multihost_args(compare)
    compare.add_argument("--num-requests", type=int, default=16, help="requests for --mode real")
    compare.add_argument("--seeds", default="0,1,2,3,4", help="arrival/predictor seeds; several give mean ± 95%% CI")
    compare.add_argument("--jobs", type=int, default=None, help="worker processes for --mode sim (default: all cores)")
    compare.add_argument("--output", type=Path, default=Path("bench_results"), help="folder for the results")

    peers = command("bench-peers", "LAMPS+ vs the peers at 1-1.5x the strongest peer's saturation (simulated)")
    peers.add_argument("--workloads", default="multi,one,agent", help="multi, one and/or agent (coding-agent sessions)")
    peers.add_argument("--seeds", default="0,1,2,3,4", help="arrival/predictor seeds (mean ± 95%% CI over them)")
    peers.add_argument("--window", type=float, help="arrival window in seconds (default: each workload's own)")
    peers.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    peers.add_argument("--output", type=Path, default=Path("bench_results/peers"), help="folder for the results")
    peers.add_argument(
        "--stages",
        default="saturation,compare,ablation,predicted,noise",
        help="stages to run; the others are read from the folder's earlier results ('' rebuilds the goals table)",
    )

    rerender = command("report", "re-render the tables and sweep plot of a bench's comparison.json")
    rerender.add_argument("json", type=Path, help="a comparison.json written by lamps-jax bench")

    calib = command("calibrate", "measure the cost model (iteration and swap times) on this device")
    calib.add_argument("--model", default="tiny", help="model whose steps and swaps are timed")
    calib.add_argument(
        "--output",
        type=Path,
        default=Path("bench_results"),
        help="a folder (writes <device>-<model>.json there) or the profile's .json file; the device profile "
        "(identity, dtype, KV budget, roofline fractions) goes beside it as .report.json; bench --profile takes both",
    )
    calib.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "int8"], help="model dtype")
    calib.add_argument(
        "--kv-memory-mib",
        type=int,
        default=None,
        help="KV memory of the profile (None: what the device reports, 90%% less the weights; unknown on a CPU)",
    )
    calib.add_argument("--repeats", type=int, default=3, help="timings per point (the median is kept)")

    devices = command("compare-devices", "one workload and its policies simulated under several device profiles")
    devices.add_argument("profiles", nargs="+", help="built-in profile names, cost model JSON files or .report.json")
    devices.add_argument("--trace", default="multi", help="multi, one, agent or a trace file")
    devices.add_argument("--fractions", default="0.5,1.0,1.25", help="rates as fractions of each device's saturation")
    devices.add_argument("--rates", default="", help="absolute request rates (req/s) run on every device too")
    devices.add_argument("--policies", default="vllm,infercept_swap,lamps", help="policies to compare")
    devices.add_argument("--seeds", default="0", help="arrival/predictor seeds; several give mean ± 95%% CI")
    devices.add_argument("--window", type=float, default=600.0, help="arrival window in seconds")
    devices.add_argument(
        "--arrivals", type=int, default=None, help="instead of --window: arrivals expected in each run (window x rate)"
    )
    devices.add_argument("--kv-tokens", type=int, default=None, help="KV capacity of profiles that carry none")
    devices.add_argument("--max-model-len", type=int, default=2048, help="context limit: requests are cut to it")
    devices.add_argument("--saturation-policy", default="vllm", help="the policy whose saturation rate is the device's")
    devices.add_argument("--ttft-limit", type=float, default=1.0, help="saturation: mean TTFT above this many seconds")
    devices.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    devices.add_argument(
        "--output", type=Path, default=Path("bench_results/devices"), help="folder for the report and plots"
    )
    length_predictor_commands.add_commands(command)
    return parser


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
    args = _build_parser().parse_args(argv)
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

"""The ``lamps-jax`` command line's arguments: every command's parser, its options and their help texts (the checks
and the commands themselves are in ``cli.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lamps_jax.bench.bench_serve import add_bench_serve_arguments
from lamps_jax.config import DTYPES
from lamps_jax.predictors import commands as length_predictor_commands
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
        choices=list(DTYPES),
        help="weights, activations and KV; int8: int8 weights (per-channel scales), float32 activations and KV "
        "(on a CPU through a C++ kernel where a compiler is found); "
        "w8a8: int8 weights and int8 activations (per row) in every matmul, float32 KV",
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


def _add_warmup_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--warmup",
        default="background",
        choices=["background", "full"],
        help="background: serve once the one-row step buckets are ready while the others compile or load (the first "
        "steps run slower); full: every bucket before the first request (a multi-host run always warms up in full)",
    )


def _add_multihost_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--coordinator-address", help="host:port of process 0 for a multi-host run (jax.distributed.initialize)"
    )
    p.add_argument("--num-processes", type=int, default=1, help="engine processes, one per host")
    p.add_argument("--process-id", type=int, default=0, help="this process (0 schedules and serves; others follow)")


def _add_sampling_args(p: argparse.ArgumentParser, max_tokens: int) -> None:
    p.add_argument("--max-tokens", type=int, default=max_tokens, help="tokens to generate per prompt")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="0 = no limit")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lamps-jax", description=DESCRIPTION, epilog=EXAMPLES, formatter_class=_HelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, formatter_class=_HelpFormatter)

    gen = command("generate", "generate for one or more prompts, served concurrently")
    _add_engine_args(gen)
    _add_sampling_args(gen, max_tokens=64)
    _add_warmup_arg(gen)
    gen.add_argument("--prompt", action="append", required=True, help="prompt (repeatable: served concurrently)")
    gen.add_argument("--chat", action="store_true", help="wrap each prompt in the model's chat template")

    demo = command("demo", "answer a few chat prompts concurrently and print throughput")
    _add_engine_args(demo)
    _add_sampling_args(demo, max_tokens=48)
    _add_warmup_arg(demo)

    serve = command("serve", "an OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions, /metrics)")
    _add_engine_args(serve)
    _add_warmup_arg(serve)
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
    bench.add_argument(
        "--num-prompts",
        type=int,
        default=32,
        help="chat prompts per run, the same for every engine (32 distinct; more repeat them)",
    )
    bench.add_argument("--max-tokens", type=int, default=128, help="tokens generated per prompt")
    bench.add_argument(
        "--peers",
        default="hf,llama_cpp",
        help="peers, each in its own process at its defaults: hf (needs torch), llama_cpp (needs llama-cpp-python)",
    )
    bench.add_argument("--repeats", type=int, default=1, help="runs per point (the median is kept)")
    bench.add_argument(
        "--dtypes",
        default="float32,int8,w8a8",
        help=f"the engine's weight formats, each run on its own ({', '.join(DTYPES)})",
    )
    bench.add_argument(
        "--prompt-tokens",
        type=int,
        default=None,
        help="measure prefill: prompts of exactly this many tokens, throughput in prompt tokens (with --max-tokens 1)",
    )
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
    calib.add_argument("--dtype", default="float32", choices=list(DTYPES), help="model dtype")
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

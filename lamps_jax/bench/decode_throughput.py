"""Generation throughput of the engine beside its peers (Hugging Face transformers, llama.cpp), same workload.

The workload: ``num_prompts`` chat-templated questions (the same token ids for every engine; past the
``len(QUESTIONS)`` distinct questions they repeat, so batches of 128 can be measured), ``max_tokens``
generated per prompt with end-of-text ignored, greedy. At batch size b the prompts run in waves of b, one wave
after another; throughput is generated tokens over the wall time of all waves, prefill included; each cell is the
median of ``repeats`` runs after an untimed warm-up. The engine runs in this process; each peer runs in a process
of its own at its library's defaults (``peer_engines``). Beside every cell: the roofline of that engine's weights
on this machine (``roofline``, measured in the same run) and the fraction reached. Start-up: model load and
compilation for the engine, model load for the peers. Results go to the console and to
``decode_throughput.{json,csv,md,png}``.

With ``prompt_tokens`` it measures prefill instead: every prompt is exactly that many tokens (the questions' text
run together from a different question each, cut there), and the throughput counts prompt tokens, not generated
ones (use one generated token: the time is then the prefill's and one sampling).
"""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jax
from rich.console import Console
from rich.progress import Progress

from lamps_jax.bench.decode_throughput_report import (
    ENGINE,
    ThroughputCell,
    ratios_to_best_peer,
    throughput_table,
    write_chart,
    write_csv,
    write_markdown,
)
from lamps_jax.bench.peer_engines import PeerWorkload
from lamps_jax.bench.prompts import QUESTIONS
from lamps_jax.bench.roofline import Machine, measure_machine, roofline_seconds
from lamps_jax.bench.wording import plural, print_written
from lamps_jax.config import DTYPES, CacheConfig, EngineConfig, SchedulerConfig
from lamps_jax.engine import LLMEngine
from lamps_jax.model.registry import LoadedModel, load_model
from lamps_jax.model.sources import SMOLLM2, smollm2_gguf_path
from lamps_jax.model.weights import save_hf_directory
from lamps_jax.request import SamplingParams

MIN_MODEL_LEN = 512  # the engine's context limit: this, or the longest prompt plus max_tokens when more
PAGE_SIZE = 16
MAX_PROMPTS = 1024
PEERS = ("hf", "llama_cpp")
ENGINE_DTYPES = ("float32", "int8", "w8a8")  # the reference, int8 weights (CPU kernel), int8 weights and activations
PEER_TIMEOUT_S = 3 * 3600


def prompt_token_ids(tokenizer: Any, count: int) -> list[list[int]]:
    """``count`` questions in order, starting over after the last, each wrapped in the tokenizer's chat template."""
    prompts = []
    for question in (QUESTIONS[i % len(QUESTIONS)] for i in range(count)):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
        prompts.append(list(tokenizer.encode(text, add_special_tokens=False)))
    return prompts


def long_prompt_token_ids(tokenizer: Any, count: int, length: int) -> list[list[int]]:
    """``count`` prompts of exactly ``length`` tokens: the questions' text from question i on, run together, cut."""
    questions = [list(tokenizer.encode(" " + q, add_special_tokens=False)) for q in QUESTIONS]
    prompts = []
    for first in range(count):
        tokens: list[int] = []
        for offset in range(first, first + length + 1):  # every question has at least one token
            tokens += questions[offset % len(questions)]
            if len(tokens) >= length:
                break
        prompts.append(tokens[:length])
    return prompts


def waves_of(num_prompts: int, batch: int) -> list[list[int]]:
    return [list(range(start, min(start + batch, num_prompts))) for start in range(0, num_prompts, batch)]


def _build_engine(model: LoadedModel, max_batch: int, max_seq_tokens: int) -> LLMEngine:
    """An engine whose KV memory holds ``max_batch`` sequences of ``max_seq_tokens`` with margin."""
    pages_per_seq = -(-max_seq_tokens // PAGE_SIZE) + 2
    kv_bytes = (max_batch * pages_per_seq + 1) * PAGE_SIZE * model.config.kv_bytes_per_token
    config = EngineConfig(
        scheduler=SchedulerConfig(max_num_seqs=max_batch, max_num_batched_tokens=512),
        cache=CacheConfig(page_size=PAGE_SIZE, kv_memory_bytes=kv_bytes),
        max_model_len=max(MIN_MODEL_LEN, -(-max_seq_tokens // PAGE_SIZE) * PAGE_SIZE),
    )
    return LLMEngine(model, config)


def _engine_run_seconds(engine: LLMEngine, prompts: list[list[int]], waves: list[list[int]], max_tokens: int) -> float:
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
    start = time.perf_counter()
    for wave in waves:
        for index in wave:
            engine.add_request(prompts[index], params)
        generated = 0
        while engine.has_unfinished_requests():
            generated += sum(len(out.token_ids) for out in engine.step())
        if generated != len(wave) * max_tokens:
            raise RuntimeError(f"the engine generated {plural(generated, 'token')}, expected {len(wave) * max_tokens}")
    return time.perf_counter() - start


def _run_peer(peer: str, workload: PeerWorkload, folder: Path) -> dict:
    """Runs a peer in its own process; returns its result, or ``{"error": ...}``."""
    path = folder / f"{peer}-workload.json"
    path.write_text(json.dumps(asdict(workload)))
    command = [sys.executable, "-m", "lamps_jax.bench.peer_engines", peer, str(path)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PEER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"ran past {PEER_TIMEOUT_S} s"}
    if done.returncode < 0:
        return {"error": f"its process died of {signal.Signals(-done.returncode).name}"}
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"error": last[0]}
    return json.loads(done.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class _ModelSetup:
    name: str
    prompts: list[list[int]]
    parameters: int
    weight_bytes: int
    hf_dir: Path
    gguf: Path | None  # llama.cpp's model file, when the model comes as one


def _peer_workloads(setup: _ModelSetup, runs: list[list[list[int]]], max_tokens: int, pad_id: int) -> dict:
    workloads = {"hf": PeerWorkload(str(setup.hf_dir), setup.prompts, runs, max_tokens, pad_id)}
    if setup.gguf is not None:
        workloads["llama_cpp"] = PeerWorkload(str(setup.gguf), setup.prompts, runs, max_tokens, pad_id)
    return workloads


def _engine_label(dtype: str) -> str:
    return ENGINE if dtype == "float32" else f"{ENGINE} {dtype}"


def _bench_engine(
    model: LoadedModel,
    dtype: str,
    name: str,
    prompts: list[list[int]],
    runs: list[list[list[int]]],
    max_tokens: int,
    max_batch: int,
    progress: Progress,
    task: Any,
    started: float,
) -> dict[str, Any]:
    """The engine over ``model``, warmed up, then every run; start-up counts from ``started`` (the model load)."""
    engine = _build_engine(model, max_batch, max(map(len, prompts)) + max_tokens)
    startup = time.perf_counter() - started
    label = _engine_label(dtype)
    _engine_run_seconds(engine, prompts, [[0]], max_tokens)  # untimed warm-up
    seconds = []
    for waves in runs:
        progress.update(task, description=f"{name}: {label} waves of {len(waves[0])}")
        seconds.append(_engine_run_seconds(engine, prompts, waves, max_tokens))
        progress.advance(task)
    weight_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(model.params))
    return {"run_seconds": seconds, "startup_s": startup, "weights": dtype, "weight_bytes": weight_bytes}


def _bench_model(
    name: str,
    batch_sizes: list[int],
    num_prompts: int,
    max_tokens: int,
    repeats: int,
    peers: tuple[str, ...],
    dtypes: tuple[str, ...],
    machine: Machine,
    folder: Path,
    console: Console,
    progress: Progress,
    prompt_tokens: int | None,
) -> tuple[list[ThroughputCell], dict[str, str]]:
    start = time.perf_counter()
    model = load_model(name)  # float32: the peers' weights and the prompts' tokenizer
    load_seconds = time.perf_counter() - start
    if prompt_tokens:
        prompts = long_prompt_token_ids(model.tokenizer, num_prompts, prompt_tokens)
    else:
        prompts = prompt_token_ids(model.tokenizer, num_prompts)
    max_seq_tokens = max(map(len, prompts)) + max_tokens
    if max_seq_tokens > model.config.max_position_embeddings:
        raise ValueError(
            f"the longest prompt plus max_tokens is {max_seq_tokens} tokens; {name} holds "
            f"{model.config.max_position_embeddings}"
        )
    leaves = jax.tree.leaves(model.params)
    setup = _ModelSetup(
        name,
        prompts,
        parameters=sum(leaf.size for leaf in leaves),
        weight_bytes=sum(leaf.nbytes for leaf in leaves),
        hf_dir=folder / f"{name}-hf",
        gguf=smollm2_gguf_path() if name == SMOLLM2 else None,
    )
    save_hf_directory(model.params, model.config, setup.hf_dir)
    task = progress.add_task(name, total=len(dtypes) * len(batch_sizes) * repeats + len(peers))
    runs = [waves_of(num_prompts, batch) for batch in batch_sizes for _ in range(repeats)]
    results = {}
    for dtype in dtypes:
        started = time.perf_counter() - (load_seconds if dtype == "float32" else 0.0)
        loaded = model if dtype == "float32" else load_model(name, dtype=dtype)
        result = _bench_engine(
            loaded, dtype, name, prompts, runs, max_tokens, max(batch_sizes), progress, task, started
        )
        results[_engine_label(dtype)] = result
        console.print(f"[dim]{name}: {_engine_label(dtype)} ready in {result['startup_s']:.1f} s (load, compile)[/dim]")
    skipped: dict[str, str] = {}
    pad_id = (model.config.eos_token_ids or (0,))[0]
    workloads = _peer_workloads(setup, [[[0]], *runs], max_tokens, pad_id)  # the first run warms up
    for peer in peers:
        progress.update(task, description=f"{name}: {peer}")
        if peer not in workloads:
            skipped[peer] = f"{name} has no GGUF file for llama.cpp"
        elif "error" in (result := _run_peer(peer, workloads[peer], folder)):
            skipped[peer] = result["error"]
        else:
            weights = "Q4_1 GGUF" if peer == "llama_cpp" else "float32"
            results[peer] = result | {"run_seconds": result["run_seconds"][1:], "weights": weights}
        progress.advance(task)
    return _cells(setup, results, batch_sizes, repeats, max_tokens, machine, bool(prompt_tokens)), skipped


def _cells(
    setup: _ModelSetup,
    results: dict,
    batch_sizes: list[int],
    repeats: int,
    max_tokens: int,
    machine: Machine,
    count_prompts: bool,
) -> list[ThroughputCell]:
    """``count_prompts``: throughput in prompt tokens (prefill), else in generated tokens."""
    cells = []
    for engine, result in results.items():
        weight_bytes = setup.gguf.stat().st_size if engine == "llama_cpp" else result.get("weight_bytes")
        weight_bytes = weight_bytes or setup.weight_bytes
        for position, batch in enumerate(batch_sizes):
            waves = waves_of(len(setup.prompts), batch)
            run_seconds = result["run_seconds"][position * repeats : (position + 1) * repeats]
            tokens = sum(map(len, setup.prompts)) if count_prompts else len(setup.prompts) * max_tokens
            lengths = [[len(setup.prompts[i]) for i in wave] for wave in waves]
            roofline = tokens / roofline_seconds(machine, weight_bytes, setup.parameters, lengths, max_tokens)
            tok_s = statistics.median(tokens / s for s in run_seconds)
            cells.append(
                ThroughputCell(setup.name, engine, result["weights"], batch, tok_s, roofline, result["startup_s"])
            )
    return cells


def _load_before_start(console: Console) -> float:
    """The 1-minute load average, with a warning when the machine is busy: the timings need an idle one."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > 0.5:
        console.print(
            f"[yellow]warning: the 1-minute load average is {load:.1f} on {plural(cores, 'core')}: other processes "
            "compete for the CPU and distort the timings[/yellow]"
        )
    return load


def run_decode_benchmark(
    models: list[str],
    batch_sizes: list[int],
    max_tokens: int,
    repeats: int,
    output_dir: Path,
    num_prompts: int = len(QUESTIONS),
    peers: tuple[str, ...] = PEERS,
    dtypes: tuple[str, ...] = ENGINE_DTYPES,
    prompt_tokens: int | None = None,
) -> list[ThroughputCell]:
    """Benchmarks every model at every batch size beside the peers, prints the table and writes the result files.
    ``dtypes``: the engine's weight formats, each run as an engine of its own (``lamps_jax <dtype>``).
    ``prompt_tokens``: prompts of exactly this many tokens, and throughput in prompt tokens (prefill)."""
    if prompt_tokens is not None and prompt_tokens < 1:
        raise ValueError(f"prompt_tokens must be >= 1, got {prompt_tokens}")
    if not 1 <= num_prompts <= MAX_PROMPTS:
        raise ValueError(f"num_prompts must be between 1 and {MAX_PROMPTS}, got {num_prompts}")
    if not batch_sizes or min(batch_sizes) < 1 or max(batch_sizes) > num_prompts:
        raise ValueError(f"batch sizes must be between 1 and {num_prompts}, got {batch_sizes}")
    if max_tokens < 1 or repeats < 1:
        raise ValueError(f"max_tokens and repeats must be >= 1, got {max_tokens} and {repeats}")
    if not dtypes or any(dtype not in DTYPES for dtype in dtypes):
        raise ValueError(f"engine dtypes must be among {', '.join(DTYPES)}, got {', '.join(dtypes) or 'none'}")
    unknown = [peer for peer in peers if peer not in PEERS]
    if unknown:
        raise ValueError(f"unknown peer {unknown[0]!r}; choose from {', '.join(PEERS)}")
    console = Console()
    load_before = _load_before_start(console)
    machine = measure_machine()
    cells, notes = [], []
    with tempfile.TemporaryDirectory() as tmp, Progress(console=console, transient=True) as progress:
        for name in models:
            found, skipped = _bench_model(
                name,
                batch_sizes,
                num_prompts,
                max_tokens,
                repeats,
                peers,
                dtypes,
                machine,
                Path(tmp),
                console,
                progress,
                prompt_tokens,
            )
            cells += found
            notes += [f"{name}: {peer} not run: {why}" for peer, why in skipped.items()]
    workload = (
        f"Prompt tokens/s (prefill): {plural(num_prompts, 'prompt')} of {plural(prompt_tokens, 'token')}, "
        f"{plural(max_tokens, 'token')} generated each"
        if prompt_tokens
        else f"Generated tokens/s: {plural(num_prompts, 'chat prompt')}, {plural(max_tokens, 'token')} each"
    )
    caption = (
        f"{workload}, greedy, end-of-text ignored, in waves of the batch size, prefill included, median of "
        f"{plural(repeats, 'run')}; roofline: {machine.bandwidth / 1e9:.1f} GB/s read, "
        f"{machine.flops / 1e9:.0f} GFLOP/s f32 (measured now)"
    )
    notes = ratios_to_best_peer(cells) + notes
    console.print(throughput_table(cells, caption))
    for note in notes:
        console.print(note)
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "setting": {
            "num_prompts": num_prompts,
            "prompt_tokens": prompt_tokens,  # None: the chat prompts, generated tokens counted
            "max_tokens": max_tokens,
            "repeats": repeats,
            "peers": list(peers),
            "engine_dtypes": list(dtypes),
        },
        "machine": asdict(machine) | _environment() | {"load_average_before": load_before},
        "notes": notes,
        "results": [c.row() for c in cells],
    }
    paths = [output_dir / f"decode_throughput.{ext}" for ext in ("json", "csv", "md", "png")]
    paths[0].write_text(json.dumps(summary, indent=2) + "\n")
    write_csv(cells, paths[1])
    write_markdown(cells, caption, notes, paths[2])
    write_chart(cells, caption, paths[3])
    print_written(paths)
    return cells


def _environment() -> dict[str, Any]:
    return {
        "jax": jax.__version__,
        "jax_device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor(),
    }

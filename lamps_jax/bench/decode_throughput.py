"""Decode throughput of the engine vs Hugging Face ``generate``, side by side on the same weights.

For each model, one ``LLMEngine`` (compiled once, reused for every batch size) and a transformers
``LlamaForCausalLM`` loaded from the engine's own parameters generate greedily for the first ``b``
chat-templated prompts, exactly ``max_tokens`` tokens per request. Throughput is generated tokens
per second with prefill included; each cell is the median over ``repeats`` runs. Results go to
the console and to ``decode_throughput.{json,csv,md,png}`` in the output directory.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from lamps_jax.bench.prompts import QUESTIONS
from lamps_jax.bench.wording import plural, print_written
from lamps_jax.config import CacheConfig, EngineConfig, SchedulerConfig
from lamps_jax.engine import LLMEngine
from lamps_jax.model.registry import LoadedModel, load_model
from lamps_jax.model.weights import save_hf_directory
from lamps_jax.request import SamplingParams

MAX_MODEL_LEN = 512
PAGE_SIZE = 16


@dataclass(frozen=True)
class DecodeResult:
    """One (model, batch size) cell: median generated tokens per second of each side."""

    model: str
    batch: int
    prompt_tokens: int  # summed over the batch
    generated_tokens: int  # summed over the batch
    engine_tok_s: float
    hf_tok_s: float

    @property
    def ratio(self) -> float:
        return self.engine_tok_s / self.hf_tok_s

    def row(self) -> dict[str, Any]:
        return asdict(self) | {"ratio": self.ratio}


def _require_torch() -> None:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as err:
        raise RuntimeError("the HF comparison needs torch: pip install -e '.[test]'") from err


def prompt_token_ids(tokenizer: Any, count: int) -> list[list[int]]:
    """The first ``count`` questions, each wrapped in the tokenizer's chat template."""
    prompts = []
    for question in QUESTIONS[:count]:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
        prompts.append(list(tokenizer.encode(text, add_special_tokens=False)))
    return prompts


def _build_engine(model: LoadedModel, max_batch: int, max_seq_tokens: int) -> LLMEngine:
    """An engine whose KV memory holds ``max_batch`` sequences of ``max_seq_tokens`` with margin."""
    pages_per_seq = -(-max_seq_tokens // PAGE_SIZE) + 2
    kv_bytes = (max_batch * pages_per_seq + 1) * PAGE_SIZE * model.config.kv_bytes_per_token
    config = EngineConfig(
        scheduler=SchedulerConfig(max_num_seqs=max_batch, max_num_batched_tokens=512),
        cache=CacheConfig(page_size=PAGE_SIZE, kv_memory_bytes=kv_bytes),
        max_model_len=MAX_MODEL_LEN,
    )
    return LLMEngine(model, config)


def _engine_generate(engine: LLMEngine, prompts: list[list[int]], max_tokens: int) -> int:
    """Serves every prompt concurrently; returns the number of generated tokens."""
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
    for ids in prompts:
        engine.add_request(ids, params)
    outputs = []
    while engine.has_unfinished_requests():
        outputs += engine.step()
    return sum(len(out.token_ids) for out in outputs)


def _load_hf_model(model: LoadedModel) -> Any:
    """transformers' model class for the config, holding exactly the engine's weights (f32, eager)."""
    import torch
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        save_hf_directory(model.params, model.config, Path(tmp))
        hf_model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32, attn_implementation="eager")
    return hf_model.eval()


def _hf_generate(hf_model: Any, prompts: list[list[int]], max_tokens: int, pad_id: int) -> int:
    """One left-padded batch through ``generate``; returns the number of generated tokens."""
    import torch

    width = max(len(ids) for ids in prompts)
    input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in prompts])
    attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts])
    with torch.inference_mode():
        out = hf_model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=False,
            max_new_tokens=max_tokens,
            min_new_tokens=max_tokens,
            pad_token_id=pad_id,
        )
    return (out.shape[1] - width) * len(prompts)


def _median_tok_s(generate: Callable[[], int], repeats: int, expected_tokens: int, label: str) -> float:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        num_tokens = generate()
        elapsed = time.perf_counter() - start
        if num_tokens != expected_tokens:
            raise RuntimeError(f"{label} generated {plural(num_tokens, 'token')}, expected {expected_tokens}")
        rates.append(num_tokens / elapsed)
    return statistics.median(rates)


def _bench_model(
    name: str, batch_sizes: list[int], max_tokens: int, repeats: int, console: Console, progress: Progress
) -> list[DecodeResult]:
    start = time.perf_counter()
    model = load_model(name)
    prompts = prompt_token_ids(model.tokenizer, max(batch_sizes))
    max_seq_tokens = max(len(ids) for ids in prompts) + max_tokens
    if max_seq_tokens > MAX_MODEL_LEN:
        raise ValueError(f"the longest prompt plus max_tokens is {max_seq_tokens} tokens; the limit is {MAX_MODEL_LEN}")
    loaded_at = time.perf_counter()
    engine = _build_engine(model, max(batch_sizes), max_seq_tokens)
    compiled_at = time.perf_counter()
    hf_model = _load_hf_model(model)
    console.print(
        f"[dim]{name}: loaded in {loaded_at - start:.1f} s, engine compiled in {compiled_at - loaded_at:.1f} s, "
        f"HF model built in {time.perf_counter() - compiled_at:.1f} s[/dim]"
    )
    pad_id = (model.config.eos_token_ids or (0,))[0]
    _engine_generate(engine, prompts[:1], max_tokens)  # untimed warm-up of both sides
    _hf_generate(hf_model, prompts[:1], max_tokens, pad_id)
    results = []
    task = progress.add_task(name, total=len(batch_sizes))
    for batch in batch_sizes:
        batch_prompts = prompts[:batch]
        expected = batch * max_tokens
        progress.update(task, description=f"{name} batch {batch}: engine")
        run_engine = functools.partial(_engine_generate, engine, batch_prompts, max_tokens)
        engine_rate = _median_tok_s(run_engine, repeats, expected, "the engine")
        progress.update(task, description=f"{name} batch {batch}: HF")
        run_hf = functools.partial(_hf_generate, hf_model, batch_prompts, max_tokens, pad_id)
        hf_rate = _median_tok_s(run_hf, repeats, expected, "HF generate")
        prompt_tokens = sum(len(ids) for ids in batch_prompts)
        results.append(DecodeResult(name, batch, prompt_tokens, expected, engine_rate, hf_rate))
        progress.advance(task)
    return results


def _load_before_start(console: Console) -> float:
    """The 1-minute load average, with a warning when the machine is busy: the timings need an idle one."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > cores / 2:
        console.print(
            f"[yellow]warning: the 1-minute load average is {load:.1f} on {plural(cores, 'core')}: other processes "
            "compete for the CPU and distort the timings (HF generate's thread pool most of all)[/yellow]"
        )
    return load


def _environment() -> dict[str, Any]:
    import jax
    import torch
    import transformers

    return {
        "jax": jax.__version__,
        "jax_device": str(jax.devices()[0]),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor(),
    }


def _table(results: list[DecodeResult], max_tokens: int) -> Table:
    table = Table(title=f"Decode tokens/s, greedy, {plural(max_tokens, 'token')} per request, prefill included")
    for column in ("model", "batch", "engine tok/s", "HF tok/s", "ratio (engine/HF)"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in results:
        table.add_row(r.model, str(r.batch), f"{r.engine_tok_s:.1f}", f"{r.hf_tok_s:.1f}", f"{r.ratio:.2f}x")
    return table


def _write_markdown(results: list[DecodeResult], max_tokens: int, repeats: int, path: Path) -> None:
    lines = [
        f"Decode throughput, greedy, {plural(max_tokens, 'token')} per request, prefill included, "
        f"median of {plural(repeats, 'run')}.",
        "",
        "| model | batch | engine tok/s | HF tok/s | ratio (engine/HF) |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {r.model} | {r.batch} | {r.engine_tok_s:.1f} | {r.hf_tok_s:.1f} | {r.ratio:.2f}x |" for r in results]
    path.write_text("\n".join(lines) + "\n")


def _write_csv(results: list[DecodeResult], path: Path) -> None:
    rows = [r.row() for r in results]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _write_chart(results: list[DecodeResult], max_tokens: int, path: Path) -> None:
    """Grouped bars (engine, HF) per batch size, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r.model for r in results))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.2), squeeze=False)
    width = 0.38
    for ax, model in zip(axes[0], models):
        cells = [r for r in results if r.model == model]
        xs = range(len(cells))
        engine_bars = ax.bar(
            [x - width / 2 for x in xs], [r.engine_tok_s for r in cells], width, label="lamps_jax engine"
        )
        ax.bar([x + width / 2 for x in xs], [r.hf_tok_s for r in cells], width, label="HF generate")
        ax.bar_label(engine_bars, labels=[f"{r.ratio:.1f}x" for r in cells], padding=2, fontsize=8)
        ax.set_xticks(list(xs), [str(r.batch) for r in cells])
        ax.set_xlabel("batch size")
        ax.set_ylabel("generated tokens / s")
        ax.set_title(model)
        ax.margins(y=0.12)
        ax.legend()
    fig.suptitle(f"Greedy decode, {plural(max_tokens, 'token')} per request (bar labels: engine/HF)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_decode_benchmark(
    models: list[str], batch_sizes: list[int], max_tokens: int, repeats: int, output_dir: Path
) -> list[DecodeResult]:
    """Benchmarks every model at every batch size, prints the table and writes the result files."""
    if not batch_sizes or min(batch_sizes) < 1 or max(batch_sizes) > len(QUESTIONS):
        raise ValueError(f"batch sizes must be between 1 and {len(QUESTIONS)}, got {batch_sizes}")
    if max_tokens < 1 or repeats < 1:
        raise ValueError(f"max_tokens and repeats must be >= 1, got {max_tokens} and {repeats}")
    _require_torch()
    console = Console()
    load_before = _load_before_start(console)
    results = []
    with Progress(console=console, transient=True) as progress:
        for name in models:
            results += _bench_model(name, batch_sizes, max_tokens, repeats, console, progress)
    console.print(_table(results, max_tokens))
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "max_tokens": max_tokens,
        "repeats": repeats,
        "environment": _environment() | {"load_average_before": load_before},
        "results": [r.row() for r in results],
    }
    paths = [output_dir / f"decode_throughput.{ext}" for ext in ("json", "csv", "md", "png")]
    paths[0].write_text(json.dumps(summary, indent=2) + "\n")
    _write_csv(results, paths[1])
    _write_markdown(results, max_tokens, repeats, paths[2])
    _write_chart(results, max_tokens, paths[3])
    print_written(paths)
    return results

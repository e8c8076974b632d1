"""Correctness on the device at hand: the paged-attention kernels against the jnp reference, and the engine's
greedy tokens against the reference engine and against dense recompute, compiled for JAX's default backend.

The test suite pins JAX to the CPU and runs the Pallas kernels in interpret mode; this check runs them as the
engine does on this machine: ``pallas`` compiled for the GPU (Triton) or TPU (Mosaic); on a CPU ``cpu`` and the
interpreted ``pallas``. Kernel batches mix contexts of 1 token, page and block multiples, a partial block and a
padding row, at serving shapes (head dim 128, pages of 16 tokens, 128-token KV blocks, permuted page tables), in
float32 and bfloat16. Results: a table and ``device_parity.json``; the exit status is 1 when any check fails.

python -m lamps_jax.bench.device_parity --output DIR [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lamps_jax.config import CacheConfig, EngineConfig, SchedulerConfig
from lamps_jax.engine import LLMEngine
from lamps_jax.model.llama import forward_dense
from lamps_jax.model.registry import LoadedModel, load_model
from lamps_jax.pallas_kernels import reference
from lamps_jax.pallas_kernels.ops import paged_attention_fn, resolve_attention_impl
from lamps_jax.pallas_kernels.ragged_batch import BatchLayout
from lamps_jax.request import SamplingParams

PAGE_SIZE = 16
PAGES_PER_BLOCK = 8  # 128-token KV blocks, the engine's default
LAYOUT = BatchLayout(
    contexts=(1, 16, 128, 300, 0, 77),  # a token, a page, a block, a partial block, a padding row, a short context
    valid=(1, 4, 4, 3, 0, 2),
    page_size=PAGE_SIZE,
    pages_per_block=PAGES_PER_BLOCK,
    head_dim=128,
    num_kv_heads=2,
    width=3 * PAGES_PER_BLOCK,  # 384 tokens
)
ATOL = {"float32": 2e-5, "bfloat16": 2e-2}  # as the kernel tests: bf16 kernels round the softmax weights to bf16
PROMPTS = ([5, 9, 2], list(range(1, 14)), [7] * 21, list(range(40, 100)))  # one chunk to four
DENSE_PAD = 128  # one dense shape: causal attention makes trailing padding invisible


def kernel_impls(backend: str, quick: bool) -> dict[str, str]:
    """Implementation name -> how it runs here: the compiled kernel on an accelerator; on a CPU the ``cpu`` path and,
    unless ``quick``, the interpreted Pallas kernel."""
    if backend == "cpu":
        return {"cpu": "compiled (XLA CPU)"} | ({} if quick else {"pallas": "interpreted (no accelerator)"})
    return {"pallas": f"compiled ({backend})"}


def check_kernel(impl: str, backend: str, num_q: int, group: int, dtype: str) -> dict:
    args, valid = LAYOUT.batch(num_q, group, dtype)
    want = np.asarray(reference.paged_attention(*args, PAGES_PER_BLOCK), np.float32)
    kernel = jax.jit(paged_attention_fn(impl, backend), static_argnums=7)
    got = np.asarray(kernel(*args, PAGES_PER_BLOCK), np.float32)
    error = float(np.abs(got - want)[valid].max())
    passed = got.shape == want.shape and bool(np.isfinite(got).all()) and error <= ATOL[dtype]
    return {"check": "kernel", "impl": impl, "q": num_q, "group": group, "dtype": dtype, "max_error": error} | {
        "tolerance": ATOL[dtype],
        "passed": passed,
    }


def _engine(model: LoadedModel, attention_impl: str) -> LLMEngine:
    config = EngineConfig(
        cache=CacheConfig(page_size=PAGE_SIZE, num_pages=64),
        scheduler=SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=32),
        max_model_len=DENSE_PAD,
        attention_impl=attention_impl,
    )
    return LLMEngine(model, config)


def greedy_tokens(model: LoadedModel, attention_impl: str, max_tokens: int) -> list[list[int]]:
    engine = _engine(model, attention_impl)
    ids = [engine.add_request(p, SamplingParams(max_tokens=max_tokens, ignore_eos=True)) for p in PROMPTS]
    outputs = {}
    while engine.has_unfinished_requests():
        outputs.update({out.req_id: out.token_ids for out in engine.step()})
    return [list(outputs[i]) for i in ids]


def dense_greedy(model: LoadedModel, prompt: list[int], num_tokens: int) -> list[int]:
    logits_at = jax.jit(lambda params, tokens, length: forward_dense(params, tokens, model.config)[length - 1])
    tokens = list(prompt)
    for _ in range(num_tokens):
        padded = np.zeros(DENSE_PAD, np.int32)
        padded[: len(tokens)] = tokens
        tokens.append(int(jnp.argmax(logits_at(model.params, padded, len(tokens)))))
    return tokens[len(prompt) :]


def check_engine(model: LoadedModel, max_tokens: int) -> list[dict]:
    """The engine's default attention here against the reference engine, and the reference against dense."""
    impl = resolve_attention_impl("auto")
    ours = greedy_tokens(model, impl, max_tokens)
    oracle = greedy_tokens(model, "reference", max_tokens)
    dense = [dense_greedy(model, p, max_tokens) for p in PROMPTS]
    return [
        {"check": "engine", "impl": impl, "against": "reference engine", "passed": ours == oracle},
        {"check": "engine", "impl": "reference", "against": "dense recompute", "passed": oracle == dense},
        {"check": "engine", "impl": impl, "against": "dense recompute", "passed": ours == dense},
    ]


def run_parity(output_dir: Path, quick: bool = False) -> list[dict]:
    backend = jax.default_backend()
    device = jax.devices()[0]
    shapes = [(1, 4), (4, 1)] if quick else [(1, 1), (1, 4), (4, 1), (4, 4)]
    rows = [
        check_kernel(impl, backend, num_q, group, dtype) | {"mode": mode}
        for impl, mode in kernel_impls(backend, quick).items()
        for dtype in ("float32", "bfloat16")
        for num_q, group in shapes
    ]
    rows += check_engine(load_model("tiny", seed=0), max_tokens=6 if quick else 14)
    print(f"Correctness on {device.device_kind} ({backend}), jax {jax.__version__}:")
    print("| check | impl | mode | case | max error | tolerance | passed |\n|---|---|---|---|---|---|---|")
    for row in rows:
        if row["check"] == "kernel":
            case = f"Q={row['q']} G={row['group']} {row['dtype']}"
            error = f"{row['max_error']:.2e} | {row['tolerance']:g}"
            print(f"| kernel | {row['impl']} | {row['mode']} | {case} | {error} | {row['passed']} |")
        else:
            print(f"| engine greedy tokens | {row['impl']} | compiled | vs {row['against']} | | | {row['passed']} |")
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "device_parity.json"
    summary = {"device_kind": device.device_kind, "backend": backend, "jax": jax.__version__, "quick": quick}
    path.write_text(json.dumps(summary | {"checks": rows, "passed": all(r["passed"] for r in rows)}, indent=2) + "\n")
    print(f"wrote {path}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("bench_results/device_check"), help="results folder")
    parser.add_argument(
        "--quick", action="store_true", help="two kernel shapes per dtype, 6 generated tokens, no interpreted kernel"
    )
    args = parser.parse_args(argv)
    rows = run_parity(args.output, args.quick)
    failed = [r for r in rows if not r["passed"]]
    for row in failed:
        print(f"FAILED: {row}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

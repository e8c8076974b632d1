"""CPU paged attention, side by side: the jnp reference vs ``cpu_attention`` (with and without its C++ kernel), at
SmolLM2-135M's shapes.

One layer's attention call (9 query heads, 3 kv heads, head dim 64, f32, pages of 16 tokens,
128-token KV blocks, a page table wide enough for 2048 tokens) for decode batches of 1, 8 and 32
rows at contexts of 100, 300 and 2000 tokens, a decode batch of 32 rows whose contexts spread
over 1..2000 tokens, and prefill chunks of 256 and 512 tokens (rows of 16 tokens of one fresh prompt).
Page ids are shuffled. The implementations are timed in alternation, so load from other
processes hits both alike; each cell is the median ms per call. The outputs are compared too
(max |difference| from the reference over all tokens, the worse of the two).

Prints a Markdown table; ``--output FILE`` also writes it to FILE (nothing is written otherwise).

python scripts/bench_attention_cpu.py [--rounds 5] [--calls 10] [--output attention_cpu.md]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lamps_jax import cpu_kernels
from lamps_jax.bench.report import print_table
from lamps_jax.pallas_kernels import cpu_attention, reference

NUM_HEADS, NUM_KV_HEADS, HEAD_DIM = 9, 3, 64  # SmolLM2-135M
PAGE_SIZE, BLOCK_TOKENS, MAX_MODEL_LEN = 16, 128, 2048
DECODE_CASES = [(rows, context) for rows in (1, 8, 32) for context in (100, 300, 2000)]
IMPLS = {
    "reference": reference.paged_attention,
    "cpu jnp": functools.partial(cpu_attention.paged_attention, kernel=False),
    "cpu": cpu_attention.paged_attention,  # the rows through the C++ kernel where it builds
}


def make_inputs(q_start: np.ndarray, context_lens: np.ndarray, seq_of_row: np.ndarray, num_q: int, seed: int = 0):
    """Rows of num_q tokens; row r reads sequence seq_of_row[r], whose pages are shuffled ids."""
    rng = np.random.default_rng(seed)
    num_rows = len(q_start)
    width = MAX_MODEL_LEN // PAGE_SIZE
    seq_pages = {}
    for seq in np.unique(seq_of_row):
        seq_pages[seq] = -(-int(context_lens[seq_of_row == seq].max()) // PAGE_SIZE)
    num_pages = 1 + sum(seq_pages.values())
    ids = iter(1 + rng.permutation(num_pages - 1))
    tables = {seq: [next(ids) for _ in range(n)] for seq, n in seq_pages.items()}
    page_table = np.zeros((num_rows, width), np.int32)
    for row, seq in enumerate(seq_of_row):
        page_table[row, : len(tables[seq])] = tables[seq]
    kv_shape = (NUM_KV_HEADS, num_pages, PAGE_SIZE, HEAD_DIM)
    q = rng.standard_normal((num_rows, num_q, NUM_HEADS, HEAD_DIM), np.float32) / np.sqrt(HEAD_DIM)
    return (
        jnp.asarray(q),
        jnp.asarray(rng.standard_normal(kv_shape, np.float32)),
        jnp.asarray(rng.standard_normal(kv_shape, np.float32)),
        jnp.asarray(page_table),
        jnp.asarray(q_start.astype(np.int32)),
        jnp.asarray(context_lens.astype(np.int32)),
        jnp.asarray(-(-int(context_lens.max()) // BLOCK_TOKENS), jnp.int32),
    )


def cases() -> list[tuple[str, tuple]]:
    out = []
    for rows, context in DECODE_CASES:
        lens = np.full(rows, context)
        out.append((f"decode B={rows}, context {context}", make_inputs(lens - 1, lens, np.arange(rows), 1)))
    lens = np.random.default_rng(1).integers(1, 2001, 32)
    out.append(("decode B=32, contexts 1..2000", make_inputs(lens - 1, lens, np.arange(32), 1)))
    for tokens in (256, 512):
        starts = np.arange(0, tokens, 16)
        label = f"prefill {tokens} tokens ({tokens // 16} rows x 16)"
        out.append((label, make_inputs(starts, starts + 16, np.zeros(tokens // 16, int), 16)))
    return out


def time_calls(fn, inputs: tuple, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(fn(*inputs))
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="alternations of the implementations per case")
    parser.add_argument("--calls", type=int, default=10, help="timed calls per implementation per round")
    parser.add_argument("--output", type=Path, help="also write the Markdown table to this file")
    args = parser.parse_args()

    pages_per_block = BLOCK_TOKENS // PAGE_SIZE
    fns = {name: jax.jit(functools.partial(fn, pages_per_block=pages_per_block)) for name, fn in IMPLS.items()}
    load = os.getloadavg()[0]
    lines = [
        f"Paged attention on {jax.devices()[0].device_kind} ({os.cpu_count()} cores, 1-minute load {load:.1f} at "
        f"start), one layer of SmolLM2-135M (9/3 heads, head dim 64, f32, pages of {PAGE_SIZE}): median ms per "
        f"call over {args.rounds} x {args.calls} alternated calls; cpu: the rows through the C++ kernel "
        f"({cpu_kernels.unavailable(cpu_kernels.PAGED_ATTENTION) or 'built'}), cpu jnp: the jnp code; "
        "ratio = reference / cpu.",
        "",
        "| case | reference ms | cpu jnp ms | cpu ms | ratio | max abs diff |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, inputs in cases():
        outputs = {name: np.asarray(fn(*inputs)) for name, fn in fns.items()}  # compiles, then checks
        times = {name: [] for name in fns}
        for _ in range(args.rounds):
            for name, fn in fns.items():
                times[name] += time_calls(fn, inputs, args.calls)
        ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
        diff = max(float(np.abs(outputs[name] - outputs["reference"]).max()) for name in ("cpu", "cpu jnp"))
        lines.append(
            f"| {label} | {ms['reference']:.3f} | {ms['cpu jnp']:.3f} | {ms['cpu']:.3f} | "
            f"{ms['reference'] / ms['cpu']:.2f}x | {diff:.1e} |"
        )
        print(lines[-1], flush=True)
    print_table(lines, args.output)


if __name__ == "__main__":
    main()

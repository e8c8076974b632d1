"""Paged-attention microbenchmark: time per call and achieved HBM bandwidth against the device's peak.

For each (batch, context length, page size) one call attends R = batch rows of Q tokens to contexts
of that length through a permuted page table; bytes moved = the K and V pages the rows can see,
plus q and the output. Achieved GB/s over the device's peak (``PEAK_GBPS`` by device kind, or
``--peak-gbps``) is the roofline fraction: decode attention is memory bound. On TPU/GPU it times the
reference and the Pallas kernel; on CPU only the reference (the kernels need an accelerator).
Results: a console table and ``attention.{json,csv}`` in ``--output-dir``.

python scripts/bench_attention.py --batch-sizes 1,8,32 --context-lens 512,2048,8192 --page-sizes 16,32
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from rich.console import Console
from rich.table import Table

from lamps_jax.pallas_kernels.ops import paged_attention_fn

# Peak memory bandwidth in GB/s by device-kind substring, most specific first.
PEAK_GBPS = (
    ("H200", 4800.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100", 1555.0),
    ("L4", 300.0),
    ("TPU v6 lite", 1640.0),
    ("TPU v5 lite", 819.0),
    ("TPU v5e", 819.0),
    ("TPU v5p", 2765.0),
    ("TPU v5", 2765.0),
    ("TPU v4", 1200.0),
)


def peak_gbps(device_kind: str) -> float | None:
    return next((gbps for name, gbps in PEAK_GBPS if name in device_kind), None)


def make_inputs(args: argparse.Namespace, batch: int, context: int, page_size: int, rng: np.random.Generator):
    dtype = jnp.dtype(args.dtype)
    pages_per_seq = -(-context // args.kv_block_tokens) * (args.kv_block_tokens // page_size)
    num_pages = batch * pages_per_seq + 1  # page 0 is the padding page
    kv_shape = (args.num_kv_heads, num_pages, page_size, args.head_dim)
    key_q, key_k, key_v = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(key_q, (batch, args.q_len, args.num_heads, args.head_dim), dtype) / args.head_dim**0.5
    page_table = (1 + rng.permutation(num_pages - 1)).reshape(batch, pages_per_seq).astype(np.int32)
    context_lens = np.full(batch, context, np.int32)
    return (
        q,
        jax.random.normal(key_k, kv_shape, dtype),
        jax.random.normal(key_v, kv_shape, dtype),
        jnp.asarray(page_table),
        jnp.asarray(context_lens - args.q_len),
        jnp.asarray(context_lens),
        jnp.asarray(-(-context // args.kv_block_tokens), jnp.int32),
    )


def bytes_moved(args: argparse.Namespace, batch: int, context: int) -> int:
    itemsize = jnp.dtype(args.dtype).itemsize
    kv = 2 * batch * context * args.num_kv_heads * args.head_dim
    q_and_out = 2 * batch * args.q_len * args.num_heads * args.head_dim
    return (kv + q_and_out) * itemsize


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def time_call(fn, inputs: tuple, repeats: int) -> float:
    """Median seconds per call, compile excluded."""
    jax.block_until_ready(fn(*inputs))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*inputs))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    on_accelerator = jax.default_backend() != "cpu"
    parser.add_argument("--batch-sizes", type=int_list, default=[1, 8, 32, 64] if on_accelerator else [1, 4])
    parser.add_argument("--context-lens", type=int_list, default=[512, 2048, 8192] if on_accelerator else [256, 1024])
    parser.add_argument("--page-sizes", type=int_list, default=[16, 32] if on_accelerator else [16])
    parser.add_argument("--q-len", type=int, default=1, help="query tokens per row: 1 = decode")
    parser.add_argument("--num-heads", type=int, default=32)
    parser.add_argument("--num-kv-heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--kv-block-tokens", type=int, default=128)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--peak-gbps", type=float, help="override the device's peak memory bandwidth")
    parser.add_argument("--output-dir", type=Path, default=Path("bench_results"))
    args = parser.parse_args()

    console = Console()
    device = jax.devices()[0]
    peak = args.peak_gbps or peak_gbps(device.device_kind)
    impls = ["reference", "pallas"] if on_accelerator else ["reference"]
    if not on_accelerator:
        console.print("[yellow]No accelerator: timing the jnp reference only; the Pallas kernels need a TPU or GPU.")
    console.print(f"device: {device.device_kind}, peak {peak or '?'} GB/s")
    rng = np.random.default_rng(0)
    rows = []
    for page_size in args.page_sizes:
        pages_per_block = args.kv_block_tokens // page_size
        for context in args.context_lens:
            for batch in args.batch_sizes:
                inputs = make_inputs(args, batch, context, page_size, rng)
                moved = bytes_moved(args, batch, context)
                for impl in impls:
                    fn = jax.jit(functools.partial(paged_attention_fn(impl), pages_per_block=pages_per_block))
                    seconds = time_call(fn, inputs, args.repeats)
                    gbps = moved / seconds / 1e9
                    rows.append(
                        {
                            "device": device.device_kind,
                            "impl": impl,
                            "batch": batch,
                            "context": context,
                            "page_size": page_size,
                            "q_len": args.q_len,
                            "ms_per_call": round(seconds * 1e3, 4),
                            "mbytes_moved": round(moved / 1e6, 3),
                            "gbps": round(gbps, 2),
                            "peak_fraction": round(gbps / peak, 4) if peak else None,
                        }
                    )

    table = Table(title=f"paged attention, {args.dtype}, Q={args.q_len}, heads {args.num_heads}/{args.num_kv_heads}")
    for column in ("impl", "batch", "context", "page", "ms/call", "MB moved", "GB/s", "% of peak"):
        table.add_column(column, justify="left" if column == "impl" else "right")
    for row in rows:
        fraction = f"{100 * row['peak_fraction']:.1f}" if row["peak_fraction"] is not None else "-"
        table.add_row(
            row["impl"],
            str(row["batch"]),
            str(row["context"]),
            str(row["page_size"]),
            f"{row['ms_per_call']:.3f}",
            f"{row['mbytes_moved']:.1f}",
            f"{row['gbps']:.1f}",
            fraction,
        )
    console.print(table)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "attention.json").write_text(json.dumps(rows, indent=2) + "\n")
    with (args.output_dir / "attention.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    console.print(f"[dim]wrote {args.output_dir}/attention.{{json,csv}}[/dim]")


if __name__ == "__main__":
    main()

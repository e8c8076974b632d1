"""The weight matmuls of one SmolLM2-135M decode step: float32 (separate or fused projections), int8 weights
(XLA, or the C++ kernel), w8a8.

Each variant is one jitted chain of the step's matmuls over 30 layers (q/k/v, o, gate/up, down) and the tied
output layer, with the model's own ``quantize.matmul`` / ``matmul_rows`` and random weights of the real shapes.
The variants run round-robin, so a busy machine slows all of them alike; each cell is the median of the rounds.
GB/s is the weight bytes one step reads (int8 values + float32 scales for int8) over its time.

python scripts/bench_matmul_cpu.py --batch-sizes 1,8,32 --rounds 15
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from lamps_jax.model import packed_int8
from lamps_jax.model.quantize import PackedInt8Weight, W8A8Weight, matmul, matmul_rows, quantize

VOCAB, D, F, LAYERS, HEADS, KV_HEADS, HEAD_DIM = 49152, 576, 1536, 30, 9, 3, 64
Q, KV = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM


def random_weights(rng: np.random.Generator) -> dict:
    """Separate projections per layer, float32 numpy, and the [V, D] tied embedding."""

    def normal(*shape: int) -> np.ndarray:
        return 0.02 * rng.standard_normal(shape, np.float32)

    layers = [
        {
            "wq": normal(D, Q),
            "wk": normal(D, KV),
            "wv": normal(D, KV),
            "wo": normal(Q, D),
            "w_gate": normal(D, F),
            "w_up": normal(D, F),
            "w_down": normal(F, D),
        }
        for _ in range(LAYERS)
    ]
    return {"layers": layers, "embed": normal(VOCAB, D)}


def variants(weights: dict) -> dict[str, dict]:
    """Weight pytrees of each variant: separate f32, fused f32, fused int8 (f32 or int8 output layer), fused int8
    packed for the C++ kernel (where it builds), fused w8a8 (int8 weights and activations, int8 output layer)."""
    fused = [
        {
            "wqkv": np.concatenate([w["wq"], w["wk"], w["wv"]], axis=1),
            "wo": w["wo"],
            "w_gate_up": np.concatenate([w["w_gate"], w["w_up"]], axis=1),
            "w_down": w["w_down"],
        }
        for w in weights["layers"]
    ]
    int8 = [{name: quantize(w, 0) for name, w in layer.items()} for layer in fused]
    w8a8 = [{name: W8A8Weight(*w) for name, w in layer.items()} for layer in int8]
    embed = jnp.asarray(weights["embed"])
    out = {
        "f32 separate": {"layers": jax.tree.map(jnp.asarray, weights["layers"]), "embed": embed},
        "f32 fused": {"layers": jax.tree.map(jnp.asarray, fused), "embed": embed},
        "int8 fused, f32 output layer": {"layers": int8, "embed": embed},
        "int8 fused, int8 output layer": {"layers": int8, "embed": quantize(weights["embed"], 1)},
        "w8a8 fused, w8a8 output layer": {"layers": w8a8, "embed": W8A8Weight(*quantize(weights["embed"], 1))},
    }
    if packed_int8.kernel_unavailable() is None:
        packed = packed_int8.pack_params({"layers": int8, "embed": quantize(weights["embed"], 1)}, True)
        out["int8 fused, int8 output layer, C++ kernel"] = {"layers": packed["layers"], "embed": packed["lm_head"]}
    return out


def decode_matmuls(params: dict, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The step's matmuls in order, with the cheap glue between them; k/v feed a checksum (kept alive)."""
    checksum = jnp.zeros((), jnp.float32)
    for layer in params["layers"]:
        if "wqkv" in layer:
            qkv = matmul(x, layer["wqkv"])
            q, kv = qkv[:, :Q], qkv[:, Q:]
        else:
            q, kv = matmul(x, layer["wq"]), matmul(x, layer["wk"]) + matmul(x, layer["wv"])
        checksum = checksum + kv.sum()
        x = x + matmul(q, layer["wo"])
        if "w_gate_up" in layer:
            gate_up = matmul(x, layer["w_gate_up"])
            gate, up = gate_up[:, :F], gate_up[:, F:]
        else:
            gate, up = matmul(x, layer["w_gate"]), matmul(x, layer["w_up"])
        x = x + matmul(jax.nn.silu(gate) * up, layer["w_down"])
    if isinstance(params["embed"], PackedInt8Weight):  # the tied output layer, packed as [D, V]
        return matmul(x, params["embed"]), checksum
    return matmul_rows(x, params["embed"]), checksum


def weight_bytes(params: dict) -> int:
    return sum(leaf.nbytes for leaf in jax.tree.leaves(params))


def materialized_converts(compiled_text: str) -> int:
    """int8 -> float32 conversions compiled as their own fusion (a float32 copy of a weight per step)."""
    return len(re.findall(r"^\s*%\S*convert\S* = f32\[.*\bfusion\(", compiled_text, flags=re.MULTILINE))


def run(batch_sizes: list[int], rounds: int) -> list[str]:
    params_by_name = variants(random_weights(np.random.default_rng(0)))
    step = jax.jit(decode_matmuls)
    rows = []
    for batch in batch_sizes:
        x = jnp.asarray(np.random.default_rng(1).standard_normal((batch, D), np.float32))
        compiled = {name: step.lower(p, x).compile() for name, p in params_by_name.items()}
        times: dict[str, list[float]] = {name: [] for name in compiled}
        for name, fn in compiled.items():
            jax.block_until_ready(fn(params_by_name[name], x))
        for _ in range(rounds):
            for name, fn in compiled.items():
                start = time.perf_counter()
                jax.block_until_ready(fn(params_by_name[name], x))
                times[name].append(time.perf_counter() - start)
        base = statistics.median(times["f32 separate"])
        for name, fn in compiled.items():
            ms = statistics.median(times[name]) * 1e3
            gb_s = weight_bytes(params_by_name[name]) / (ms / 1e3) / 1e9
            converts = materialized_converts(fn.as_text())
            rows.append(
                f"| {batch} | {name} | {ms:.1f} | {gb_s:.1f} | {base * 1e3 / ms:.2f}x | "
                f"{weight_bytes(params_by_name[name]) / 2**20:.0f} | {converts} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    load = os.getloadavg()[0]
    rows = run(batch_sizes, args.rounds)
    print(
        f"One SmolLM2-135M decode step's weight matmuls (30 layers + tied output layer), jax {jax.__version__} "
        f"on {os.cpu_count()} CPU cores, median of {args.rounds} round-robin rounds; 1-minute load average "
        f"{load:.1f} at the start. 'x f32 separate' is the speed-up over separate float32 projections at the same "
        "batch; 'converts' counts int8 weights that the compiled step converts into a float32 copy first.\n"
    )
    print("| batch | weights | ms | GB/s of weights | x f32 separate | weight MiB | converts |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

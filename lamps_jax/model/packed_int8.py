"""int8 weights laid out for the CPU kernel ``cpu_kernels/int8_matmul.cc``: weight-only int8 at int8's bytes.

XLA's CPU backend runs an ``Int8Weight`` matmul by converting the whole weight into a float32 temporary
each step. The kernel converts inside its loop instead, reading a quarter of float32's bytes; it wants
each weight as ``[N / 64, K, 64]`` blocks of 64 output columns (``quantize.PackedInt8Weight``). ``pack_params``
repacks a single-device CPU runner's int8 params once, when they are placed (``runner.py``); the tied
output layer gets a packed transposed copy (``lm_head``), the embedding stays for the token lookup.
The numbers are those of ``Int8Weight`` (the same int8 values and scales, float32 sums in another order).
"""

from __future__ import annotations

import warnings

import numpy as np

from lamps_jax import cpu_kernels
from lamps_jax.config import ModelConfig
from lamps_jax.model.quantize import Int8Weight, PackedInt8Weight

BLOCK = 64  # output columns per packed block (kBlock in int8_matmul.cc)


def kernel_unavailable() -> str | None:
    """None when the int8 kernel is built and registered, else why not (then int8 stays on XLA's path)."""
    return cpu_kernels.unavailable(cpu_kernels.INT8_MATMUL)


def pack(values: np.ndarray, scale: np.ndarray) -> PackedInt8Weight:
    """int8 ``values [K, N]`` and per-column ``scale`` (any shape of N values) as blocks of 64 columns."""
    k, n = values.shape
    num_blocks = -(-n // BLOCK)
    padded = np.zeros((k, num_blocks * BLOCK), np.int8)
    padded[:, :n] = values
    blocks = np.ascontiguousarray(padded.reshape(k, num_blocks, BLOCK).transpose(1, 0, 2))
    return PackedInt8Weight(blocks, np.asarray(scale, np.float32).reshape(n))


def _packed(w):
    if type(w) is not Int8Weight:  # float (norms, biases, unquantized), or w8a8: its own int8 x int8 path
        return w
    return pack(np.asarray(w.values), np.asarray(w.scale))


def pack_params(params: dict, tie_word_embeddings: bool) -> dict:
    """Every weight-only int8 ``[in, out]`` matrix packed (the layers', an untied ``lm_head``); a tied int8
    embedding ``[V, D]`` stays for the token lookup and also comes as a packed ``lm_head`` ``[D, V]``."""
    out = dict(params, layers=[{name: _packed(w) for name, w in layer.items()} for layer in params["layers"]])
    if "lm_head" in params:
        out["lm_head"] = _packed(params["lm_head"])
    embed = params["embed"]
    if tie_word_embeddings and type(embed) is Int8Weight:
        out["lm_head"] = pack(np.asarray(embed.values).T, np.asarray(embed.scale))
    return out


def for_cpu_kernel(params: dict, cfg: ModelConfig) -> dict:
    """``params`` packed when they hold weight-only int8 matrices and the kernel is ready; else as they are,
    with a warning saying why the int8 matmuls stay on XLA's slow path."""
    if type(params["layers"][0]["wqkv"]) is not Int8Weight:
        return params
    reason = kernel_unavailable()
    if reason is not None:
        warnings.warn(f"int8 matmuls run through XLA (a float32 copy of each weight per step): {reason}", stacklevel=2)
        return params
    return pack_params(params, cfg.tie_word_embeddings)

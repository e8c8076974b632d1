"""int8 weight-only quantization: symmetric per-output-channel scales, float32 activations.

A quantized matrix is an ``Int8Weight(values, scale)`` in place of the float array in the params
pytree: ``w ≈ values * scale``, with ``scale`` keeping the weight's rank and size 1 on the axis that
is contracted (``[1, out]`` for a ``[in, out]`` projection, ``[V, 1]`` for the ``[V, D]`` embedding,
whose rows are the output channels of the tied logits). ``matmul``, ``matmul_rows`` and
``take_rows`` accept either form, so the model code is the same for both.

On XLA CPU the int8 -> float32 convert is not fused into the dot: the compiled step converts each
weight into a float32 temporary and runs the float32 dot on it (see scripts/bench_matmul_cpu.py).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Weight = jax.Array  # or Int8Weight

QUANTIZED_LAYER_WEIGHTS = ("wqkv", "wo", "w_gate_up", "w_down")


class Int8Weight(NamedTuple):
    values: jax.Array  # int8, the float weight's shape
    scale: jax.Array  # float32, the weight's rank with size 1 on the contracted axis


def quantize(w: np.ndarray | jax.Array, contracted_axis: int) -> Int8Weight:
    """Symmetric int8 with one scale per output channel (max |w| over ``contracted_axis`` maps to 127)."""
    w = np.asarray(w, np.float32)
    scale = np.abs(w).max(axis=contracted_axis, keepdims=True) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)  # all-zero channels stay exactly zero
    values = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return Int8Weight(jnp.asarray(values), jnp.asarray(scale))


def dequantize(w: Weight) -> jax.Array:
    if isinstance(w, Int8Weight):
        return w.values.astype(jnp.float32) * w.scale
    return w


def is_quantized(params: dict) -> bool:
    return isinstance(params["layers"][0]["wqkv"], Int8Weight)


def quantize_params(params: dict, embed: bool = True) -> dict:
    """Every projection to int8 (float32 params in); the embedding too unless ``embed=False``.

    Norms and biases stay float32. An untied ``lm_head [D, V]`` is quantized per vocabulary column.
    """
    out = dict(params)
    out["layers"] = [
        {name: quantize(w, 0) if name in QUANTIZED_LAYER_WEIGHTS else w for name, w in layer.items()}
        for layer in params["layers"]
    ]
    if embed:
        out["embed"] = quantize(params["embed"], 1)
    if "lm_head" in params:
        out["lm_head"] = quantize(params["lm_head"], 0)
    return out


def matmul(x: jax.Array, w: Weight) -> jax.Array:
    """``x [..., in] @ w [in, out]``; an int8 weight is scaled on the output, after the dot."""
    if not isinstance(w, Int8Weight):
        return x @ w
    dims = (((x.ndim - 1,), (0,)), ((), ()))
    out = jax.lax.dot_general(x, w.values, dims, preferred_element_type=jnp.float32)
    return (out * w.scale[0]).astype(x.dtype)


def matmul_rows(x: jax.Array, w: Weight) -> jax.Array:
    """``x [..., D]`` against the rows of ``w [V, D]`` (the tied output layer): ``[..., V]``, no transposed copy."""
    if not isinstance(w, Int8Weight):
        return jnp.einsum("...d,vd->...v", x, w)
    dims = (((x.ndim - 1,), (1,)), ((), ()))
    out = jax.lax.dot_general(x, w.values, dims, preferred_element_type=jnp.float32)
    return (out * w.scale[:, 0]).astype(x.dtype)


def take_rows(w: Weight, ids: jax.Array) -> jax.Array:
    """Rows ``w[ids]`` (the embedding lookup); of an int8 table only the gathered rows are converted."""
    if not isinstance(w, Int8Weight):
        return w[ids]
    return w.values[ids].astype(jnp.float32) * w.scale[ids]

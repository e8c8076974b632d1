"""int8 quantization: symmetric per-output-channel weight scales, with float32 or int8 activations.

A quantized matrix is an ``Int8Weight(values, scale)`` in place of the float array in the params
pytree: ``w ≈ values * scale``, with ``scale`` keeping the weight's rank and size 1 on the axis that
is contracted (``[1, out]`` for a ``[in, out]`` projection, ``[V, 1]`` for the ``[V, D]`` embedding,
whose rows are the output channels of the tied logits). ``matmul``, ``matmul_rows`` and
``take_rows`` accept either form, so the model code is the same for both.

Two kinds (``quantize_params(activations=...)``):
- ``Int8Weight`` (dtype ``int8``): weight-only; the dot takes float32 activations. On XLA CPU the
  int8 -> float32 convert is not fused into the dot: the compiled step converts each weight into a
  float32 temporary and runs the float32 dot on it, several times slower than float32.
- ``W8A8Weight`` (dtype ``w8a8``): each matmul also quantizes its activations, one symmetric scale per
  row (token) computed in the step (max |x| of the row / 127), and runs an int8 x int8 -> int32 dot
  that XLA CPU executes natively: a quarter of the weight bytes and no float32 copy of them.
- ``PackedInt8Weight``: an ``Int8Weight`` repacked for the CPU kernel (``packed_int8.py``), which converts
  the weights inside its loop; a CPU runner uses it for dtype ``int8`` where the kernel builds.
All are measured in scripts/bench_matmul_cpu.py.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lamps_jax import cpu_kernels

Weight = jax.Array  # or Int8Weight, PackedInt8Weight

QUANTIZED_LAYER_WEIGHTS = ("wqkv", "wo", "w_gate_up", "w_down")


class Int8Weight(NamedTuple):
    values: jax.Array  # int8, the float weight's shape
    scale: jax.Array  # float32, the weight's rank with size 1 on the contracted axis


class W8A8Weight(Int8Weight):
    """An ``Int8Weight`` whose matmuls quantize the activations to int8 too (per row, dynamic)."""

    __slots__ = ()


class PackedInt8Weight(NamedTuple):
    """An ``[K, N]`` ``Int8Weight`` as blocks of 64 output columns, the CPU kernel's layout."""

    blocks: jax.Array  # int8 [ceil(N / 64), K, 64], columns past N zero
    scale: jax.Array  # float32 [N]


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


def quantize_params(params: dict, embed: bool = True, activations: bool = False) -> dict:
    """Every projection to int8 (float32 params in); the embedding too unless ``embed=False``.

    Norms and biases stay float32. An untied ``lm_head [D, V]`` is quantized per vocabulary column.
    ``activations``: ``W8A8Weight`` (int8 activations in every matmul) instead of ``Int8Weight``.
    """
    kind = W8A8Weight if activations else Int8Weight

    def to_int8(w: np.ndarray | jax.Array, contracted_axis: int) -> Int8Weight:
        return kind(*quantize(w, contracted_axis))

    out = dict(params)
    out["layers"] = [
        {name: to_int8(w, 0) if name in QUANTIZED_LAYER_WEIGHTS else w for name, w in layer.items()}
        for layer in params["layers"]
    ]
    if embed:
        out["embed"] = to_int8(params["embed"], 1)
    if "lm_head" in params:
        out["lm_head"] = to_int8(params["lm_head"], 0)
    return out


def _int8_dot(x: jax.Array, values: jax.Array, contracted_axis: int) -> jax.Array:
    """``x [..., in]`` against int8 ``values`` with ``x`` quantized per row: float32 ``[..., out]``, before the
    weight's scale. A lone row is padded to two: XLA CPU's int8 dot runs a single row several times slower."""
    lead, width = x.shape[:-1], x.shape[-1]
    rows = x.reshape(-1, width).astype(jnp.float32)
    num_rows = rows.shape[0]
    if num_rows == 1:
        rows = jnp.pad(rows, ((0, 1), (0, 0)))
    row_scale = jnp.max(jnp.abs(rows), axis=1, keepdims=True) / 127.0
    row_scale = jnp.where(row_scale > 0, row_scale, 1.0)
    quantized = jnp.clip(jnp.rint(rows / row_scale), -127, 127).astype(jnp.int8)
    dims = (((1,), (contracted_axis,)), ((), ()))
    out = jax.lax.dot_general(quantized, values, dims, preferred_element_type=jnp.int32)
    return (out.astype(jnp.float32) * row_scale)[:num_rows].reshape(*lead, -1)


def _packed_matmul(x: jax.Array, w: PackedInt8Weight) -> jax.Array:
    """Through the CPU kernel (registered by ``packed_int8.kernel_unavailable``), in float32."""
    out_type = jax.ShapeDtypeStruct((*x.shape[:-1], w.scale.shape[0]), jnp.float32)
    out = jax.ffi.ffi_call(cpu_kernels.INT8_MATMUL.target, out_type)(x.astype(jnp.float32), w.blocks, w.scale)
    return out.astype(x.dtype)


def matmul(x: jax.Array, w: Weight) -> jax.Array:
    """``x [..., in] @ w [in, out]``; an int8 weight is scaled on the output, after the dot."""
    if isinstance(w, PackedInt8Weight):
        return _packed_matmul(x, w)
    if not isinstance(w, Int8Weight):
        return x @ w
    if isinstance(w, W8A8Weight):
        return (_int8_dot(x, w.values, 0) * w.scale[0]).astype(x.dtype)
    dims = (((x.ndim - 1,), (0,)), ((), ()))
    out = jax.lax.dot_general(x, w.values, dims, preferred_element_type=jnp.float32)
    return (out * w.scale[0]).astype(x.dtype)


def matmul_rows(x: jax.Array, w: Weight) -> jax.Array:
    """``x [..., D]`` against the rows of ``w [V, D]`` (the tied output layer): ``[..., V]``, no transposed copy."""
    if not isinstance(w, Int8Weight):
        return jnp.einsum("...d,vd->...v", x, w)
    if isinstance(w, W8A8Weight):
        return (_int8_dot(x, w.values, 1) * w.scale[:, 0]).astype(x.dtype)
    dims = (((x.ndim - 1,), (1,)), ((), ()))
    out = jax.lax.dot_general(x, w.values, dims, preferred_element_type=jnp.float32)
    return (out * w.scale[:, 0]).astype(x.dtype)


def take_rows(w: Weight, ids: jax.Array) -> jax.Array:
    """Rows ``w[ids]`` (the embedding lookup); of an int8 table only the gathered rows are converted."""
    if not isinstance(w, Int8Weight):
        return w[ids]
    return w.values[ids].astype(jnp.float32) * w.scale[ids]

"""Query layout shared by the Pallas kernels: ``[R, Q, N, H]`` <-> per-kv-head matmul rows ``[R, K, M, H]``.

Under GQA the G = N / K query heads that share a kv head, times the row's Q tokens, are the M = Q * G
rows of one matmul against that head's KV, ordered (token, group): matmul row i is token i // G.
The kernels pad M up to what their tiles need; padded rows compute on zeros and are dropped here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def fold_heads(q: jax.Array, num_kv_heads: int, padded_rows: int) -> jax.Array:
    """q [R, Q, N, H] -> [R, K, padded_rows, H], zero rows after the first Q * G."""
    num_rows, num_q, num_heads, head_dim = q.shape
    group = num_heads // num_kv_heads
    rows = q.reshape(num_rows, num_q, num_kv_heads, group, head_dim).transpose(0, 2, 1, 3, 4)
    rows = rows.reshape(num_rows, num_kv_heads, num_q * group, head_dim)
    return jnp.pad(rows, ((0, 0), (0, 0), (0, padded_rows - num_q * group), (0, 0)))


def unfold_heads(out: jax.Array, num_q: int, num_heads: int) -> jax.Array:
    """out [R, K, M, H] (M >= Q * G) -> [R, Q, N, H]."""
    num_rows, num_kv_heads, _, head_dim = out.shape
    group = num_heads // num_kv_heads
    out = out[:, :, : num_q * group].reshape(num_rows, num_kv_heads, num_q, group, head_dim)
    return out.transpose(0, 2, 1, 3, 4).reshape(num_rows, num_q, num_heads, head_dim)

"""Pure-jnp paged attention: the reference every kernel is checked against.

One function covers a batch of single-token decodes (Q = 1) and ragged prefill chunks (Q > 1):
each query row r holds Q consecutive tokens of one sequence, starting at ``q_start[r]``, and reads
that sequence's KV through ``page_table[r]``. The KV is walked in blocks of ``pages_per_block`` pages
with an online softmax, and only for as many blocks as the longest context needs (a traced count), so
one compiled shape serves every context length and the page-table width stays fixed.

Shapes: R rows, Q tokens per row, N query heads, K kv heads, H head dim, P pages, S page size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MASK_VALUE = -1e30  # finite, so rows with nothing to attend to stay NaN-free


def paged_attention(
    q: jax.Array,  # [R, Q, N, H], already scaled by 1/sqrt(H)
    k_pages: jax.Array,  # [K, P, S, H]
    v_pages: jax.Array,  # [K, P, S, H]
    page_table: jax.Array,  # [R, W] int32 page ids, W a multiple of pages_per_block
    q_start: jax.Array,  # [R] int32 position of each row's first query token
    context_lens: jax.Array,  # [R] int32 KV tokens visible to the row (its own tokens included)
    num_kv_blocks: jax.Array,  # [] int32 blocks to walk: ceil(max(context_lens) / block tokens)
    pages_per_block: int,
) -> jax.Array:  # [R, Q, N, H]
    num_rows, num_q, num_heads, head_dim = q.shape
    num_kv_heads, _, page_size, _ = k_pages.shape
    group = num_heads // num_kv_heads
    block_tokens = pages_per_block * page_size
    qg = q.reshape(num_rows, num_q, num_kv_heads, group, head_dim).astype(jnp.float32)
    q_pos = q_start[:, None] + jnp.arange(num_q, dtype=jnp.int32)[None, :]  # [R, Q]

    def gather(pages: jax.Array, ids: jax.Array) -> jax.Array:  # -> [R, K, T, H]
        blk = jnp.swapaxes(pages[:, ids], 0, 1)  # [R, K, pages_per_block, S, H]
        return blk.reshape(num_rows, num_kv_heads, block_tokens, head_dim).astype(jnp.float32)

    def body(j, carry):
        m, denom, acc = carry
        ids = jax.lax.dynamic_slice_in_dim(page_table, j * pages_per_block, pages_per_block, axis=1)
        k = gather(k_pages, ids)
        v = gather(v_pages, ids)
        s = jnp.einsum("rqkgh,rkth->rqkgt", qg, k)
        kv_pos = j * block_tokens + jnp.arange(block_tokens, dtype=jnp.int32)
        visible = (kv_pos[None, None, :] <= q_pos[:, :, None]) & (
            kv_pos[None, None, :] < context_lens[:, None, None]
        )  # [R, Q, T]
        s = jnp.where(visible[:, :, None, None, :], s, MASK_VALUE)
        m_new = jnp.maximum(m, s.max(axis=-1))
        p = jnp.exp(s - m_new[..., None])
        correction = jnp.exp(m - m_new)
        denom_new = denom * correction + p.sum(axis=-1)
        acc_new = acc * correction[..., None] + jnp.einsum("rqkgt,rkth->rqkgh", p, v)
        return m_new, denom_new, acc_new

    stats_shape = (num_rows, num_q, num_kv_heads, group)
    init = (
        jnp.full(stats_shape, MASK_VALUE, jnp.float32),
        jnp.zeros(stats_shape, jnp.float32),
        jnp.zeros((*stats_shape, head_dim), jnp.float32),
    )
    _, denom, acc = jax.lax.fori_loop(0, num_kv_blocks, body, init)
    out = acc / jnp.maximum(denom, 1e-30)[..., None]
    return out.reshape(num_rows, num_q, num_heads, head_dim).astype(q.dtype)


def dense_causal_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Attention without a cache, for oracles: q [T, N, H] (scaled), k/v [T, K, H] -> [T, N, H]."""
    num_tokens, num_heads, _ = q.shape
    group = num_heads // k.shape[1]
    k = jnp.repeat(k, group, axis=1)
    v = jnp.repeat(v, group, axis=1)
    s = jnp.einsum("qnh,tnh->nqt", q.astype(jnp.float32), k.astype(jnp.float32))
    causal = jnp.tril(jnp.ones((num_tokens, num_tokens), bool))
    s = jnp.where(causal[None], s, MASK_VALUE)
    return jnp.einsum("nqt,tnh->qnh", jax.nn.softmax(s, axis=-1), v.astype(jnp.float32)).astype(q.dtype)

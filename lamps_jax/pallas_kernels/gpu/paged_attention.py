"""Pallas (Triton) GPU paged attention for a ragged batch of decode rows (Q = 1) and prefill chunks (Q > 1).

Contract of ``reference.paged_attention``. The grid is (row, kv head, split): split-K cuts each row's
context, ``ceil(context_lens[r] / block tokens)`` blocks counted at run time, into ``num_splits``
near-equal runs of blocks so that long contexts fill the GPU even at small batch. A program gathers
its blocks' pages through the page table (pages_per_block * S tokens per step), runs an online
softmax in f32 for the M = Q * G query rows of its kv head (GQA folded into the matmul rows), and
writes an unnormalised partial output with its running max and denominator; a small jnp epilogue
merges the splits. ``interpret=True`` runs it on CPU. (JAX deprecates its Triton backend for Mosaic GPU
from 0.11 on, with a warning; it works through 0.12.)
Triton tiles: S, pages_per_block and H powers of two, block tokens and H >= 16 (M is padded to fit).
Shapes: R rows, Q tokens per row, N query heads, K kv heads, G = N / K, H head dim, P pages, S page size.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from lamps_jax.pallas_kernels.layout import fold_heads, unfold_heads
from lamps_jax.pallas_kernels.reference import MASK_VALUE

TARGET_PROGRAMS = 264  # default split count aims at this many programs: two waves on an H100's 132 SMs
MIN_DOT_SIZE = 16  # smallest dimension of a tl.dot operand


def _kernel(
    q_ref,  # [M, H] this (row, kv head)'s queries, rows ordered (token, group)
    k_ref,  # [P, S, H] this kv head's pages
    v_ref,  # [P, S, H]
    page_table_ref,  # [W] this row's page ids
    q_start_ref,  # [1]
    context_len_ref,  # [1]
    acc_ref,  # [M, H] f32 unnormalised partial output
    m_ref,  # [M] f32 running max
    denom_ref,  # [M] f32 running denominator
    *,
    pages_per_block: int,
    group: int,
):
    num_q_rows, head_dim = q_ref.shape
    page_size = k_ref.shape[1]
    block_tokens = pages_per_block * page_size
    split, num_splits = pl.program_id(2), pl.num_programs(2)
    context_len = context_len_ref[0]
    num_blocks = lax.div(context_len + block_tokens - 1, block_tokens)
    blocks_per_split = lax.div(num_blocks + num_splits - 1, num_splits)
    first = split * blocks_per_split
    last = jnp.minimum(first + blocks_per_split, num_blocks)
    q = q_ref[...]
    q_pos = q_start_ref[0] + lax.div(jnp.arange(num_q_rows, dtype=jnp.int32), group)  # [M]

    def body(block, carry):
        acc, m, denom = carry
        ids = page_table_ref[pl.ds(block * pages_per_block, pages_per_block)]
        k = k_ref[ids].reshape(block_tokens, head_dim)  # [T, H]
        v = v_ref[ids].reshape(block_tokens, head_dim)
        s = lax.dot_general(
            q, k, (((1,), (1,)), ((), ())), precision=lax.Precision.HIGHEST, preferred_element_type=jnp.float32
        )  # [M, T]
        kv_pos = block * block_tokens + jnp.arange(block_tokens, dtype=jnp.int32)  # [T]
        visible = (kv_pos[None, :] <= q_pos[:, None]) & (kv_pos[None, :] < context_len)  # [M, T]
        s = jnp.where(visible, s, MASK_VALUE)
        m_next = jnp.maximum(m, s.max(axis=1))
        alpha = jnp.exp(m - m_next)
        p = jnp.where(visible, jnp.exp(s - m_next[:, None]), 0.0)  # a split that sees nothing keeps denom = 0
        pv = lax.dot_general(
            p.astype(v.dtype),
            v,
            (((1,), (0,)), ((), ())),
            precision=lax.Precision.HIGHEST,
            preferred_element_type=jnp.float32,
        )  # [M, H]
        return acc * alpha[:, None] + pv, m_next, denom * alpha + p.sum(axis=1)

    init = (
        jnp.zeros((num_q_rows, head_dim), jnp.float32),
        jnp.full((num_q_rows,), MASK_VALUE, jnp.float32),
        jnp.zeros((num_q_rows,), jnp.float32),
    )
    acc, m, denom = lax.fori_loop(first, last, body, init)
    acc_ref[...] = acc
    m_ref[...] = m
    denom_ref[...] = denom


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def paged_attention(
    q: jax.Array,  # [R, Q, N, H], already scaled by 1/sqrt(H)
    k_pages: jax.Array,  # [K, P, S, H]
    v_pages: jax.Array,  # [K, P, S, H]
    page_table: jax.Array,  # [R, W] int32 page ids, W a multiple of pages_per_block
    q_start: jax.Array,  # [R] int32
    context_lens: jax.Array,  # [R] int32
    num_kv_blocks: jax.Array,  # [] int32, unused: splits are cut from each row's own context length
    pages_per_block: int,
    *,
    num_splits: int | None = None,
    num_warps: int = 4,
    num_stages: int = 2,
    interpret: bool = False,
) -> jax.Array:  # [R, Q, N, H]
    del num_kv_blocks
    num_rows, num_q, num_heads, head_dim = q.shape
    num_kv_heads, num_pages, page_size, _ = k_pages.shape
    page_table_width = page_table.shape[1]
    if not all(_is_pow2(n) for n in (page_size, pages_per_block, head_dim)):
        raise ValueError(f"page size {page_size}, {pages_per_block=} and head_dim {head_dim} must be powers of two")
    if page_table_width % pages_per_block:
        raise ValueError(f"page-table width {page_table_width} is not a multiple of {pages_per_block=}")
    if min(pages_per_block * page_size, head_dim) < MIN_DOT_SIZE:
        raise ValueError(f"block tokens and head_dim must be >= {MIN_DOT_SIZE} (tl.dot tiles)")
    if num_splits is None:
        num_splits = max(1, min(page_table_width // pages_per_block, pl.cdiv(TARGET_PROGRAMS, num_rows * num_kv_heads)))
    num_q_rows = max(MIN_DOT_SIZE, pl.next_power_of_2(num_q * num_heads // num_kv_heads))  # M
    q_rows = fold_heads(q, num_kv_heads, num_q_rows)  # [R, K, M, H]
    pages = pl.BlockSpec((None, num_pages, page_size, head_dim), lambda r, h, s: (h, 0, 0, 0))
    scalar = pl.BlockSpec((1,), lambda r, h, s: (r,))
    partials = (num_splits, num_rows, num_kv_heads, num_q_rows)
    acc, m, denom = pl.pallas_call(
        functools.partial(_kernel, pages_per_block=pages_per_block, group=num_heads // num_kv_heads),
        grid=(num_rows, num_kv_heads, num_splits),
        in_specs=[
            pl.BlockSpec((None, None, num_q_rows, head_dim), lambda r, h, s: (r, h, 0, 0)),
            pages,
            pages,
            pl.BlockSpec((None, page_table_width), lambda r, h, s: (r, 0)),
            scalar,
            scalar,
        ],
        out_specs=[
            pl.BlockSpec((None, None, None, num_q_rows, head_dim), lambda r, h, s: (s, r, h, 0, 0)),
            pl.BlockSpec((None, None, None, num_q_rows), lambda r, h, s: (s, r, h, 0)),
            pl.BlockSpec((None, None, None, num_q_rows), lambda r, h, s: (s, r, h, 0)),
        ],
        out_shape=[
            jax.ShapeDtypeStruct((*partials, head_dim), jnp.float32),
            jax.ShapeDtypeStruct(partials, jnp.float32),
            jax.ShapeDtypeStruct(partials, jnp.float32),
        ],
        compiler_params=pltriton.CompilerParams(num_warps=num_warps, num_stages=num_stages),
        interpret=interpret,
        name="lamps_paged_attention_gpu",
    )(q_rows, k_pages, v_pages, page_table, q_start, context_lens)
    # merge the splits: [splits, R, K, M(, H)] -> [R, K, M, H]
    m_all = m.max(axis=0)
    weight = jnp.exp(m - m_all)
    denom = (weight * denom).sum(axis=0)
    out = (weight[..., None] * acc).sum(axis=0) / jnp.where(denom == 0.0, 1.0, denom)[..., None]  # 0 if no context
    return unfold_heads(out.astype(q.dtype), num_q, num_heads)

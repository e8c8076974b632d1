"""Mosaic TPU paged attention over a ragged batch of decode rows (Q = 1) and prefill chunks (Q > 1).

Contract of ``reference.paged_attention``. One grid step per query row, all K kv heads at once: page
table, ``q_start`` and ``context_lens`` are scalar-prefetched into SMEM; the row's KV is walked in
blocks of ``pages_per_block`` pages, DMA'd HBM -> VMEM (one strided copy per page for all kv heads)
into two buffers so block j+1 streams in while block j is computed; pages past the context are
skipped. GQA folds the G query heads of a kv head and the Q tokens into M = Q * G matmul rows;
online softmax in f32, matmuls on the input dtype (bf16 on the MXU) with f32 accumulation.
Our own kernel rather than a wrapper: JAX's ``ops.tpu.paged_attention`` is decode only (no causal
Q > 1 rows); ``ops.tpu.ragged_paged_attention`` wants a fused ``[P, S, 2K, H]`` cache and flat
``cu_q_lens`` token packing (re-laying our ``[K, P, S, H]`` pages every step) and its ref reshapes
fail under the TPU simulator (jax 0.10-0.12), so it could not be tested here.
Shapes: R rows, Q tokens per row, N query heads, K kv heads, G = N / K, H head dim, P pages, S page size.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from lamps_jax.pallas_kernels.layout import fold_heads, unfold_heads
from lamps_jax.pallas_kernels.reference import MASK_VALUE

LANES = 128  # softmax statistics are kept lane-replicated, [M, 128], the layout Mosaic stores natively


def _lanes(x: jax.Array, width: int) -> jax.Array:
    """[M, 128] lane-replicated statistic -> [M, width]."""
    return x[:, :width] if width <= LANES else jnp.tile(x, (1, width // LANES))


def _kernel(
    page_table_ref,  # SMEM [R * W] int32, row-major
    q_start_ref,  # SMEM [R] int32
    context_lens_ref,  # SMEM [R] int32
    q_ref,  # VMEM [K, M, H] this row's queries, rows ordered (token, group)
    k_hbm,  # HBM [K, P, S, H]
    v_hbm,  # HBM [K, P, S, H]
    o_ref,  # VMEM [K, M, H]
    k_buf,  # VMEM [2, K, pages_per_block, S, H]
    v_buf,  # VMEM [2, K, pages_per_block, S, H]
    sems,  # DMA semaphores [2, 2]: (K or V, buffer)
    m_ref,  # VMEM [K, M, 128] f32 running max
    denom_ref,  # VMEM [K, M, 128] f32 running denominator
    acc_ref,  # VMEM [K, M, H] f32 unnormalised output
    *,
    page_table_width: int,
    group: int,
):
    num_kv_heads, _, pages_per_block, page_size, head_dim = k_buf.shape
    num_q_rows = q_ref.shape[1]  # M
    block_tokens = pages_per_block * page_size
    row = pl.program_id(0)
    context_len = context_lens_ref[row]
    num_pages = lax.div(context_len + page_size - 1, page_size)  # lax.div: no sign fix-up ops, lengths are >= 0
    num_blocks = lax.div(context_len + block_tokens - 1, block_tokens)

    def transfer(block, slot, *, wait: bool):  # starts or waits for the DMAs of one block's pages
        for i in range(pages_per_block):
            page_idx = block * pages_per_block + i
            page = page_table_ref[row * page_table_width + page_idx]
            fetched = page_idx < num_pages
            for kv, (hbm, buf) in enumerate(((k_hbm, k_buf), (v_hbm, v_buf))):
                copy = pltpu.make_async_copy(hbm.at[:, page], buf.at[slot, :, i], sems.at[kv, slot])
                pl.when(fetched)(copy.wait if wait else copy.start)
            if wait:  # a page past the context is not fetched: zero its V so 0-weights cannot meet NaNs

                @pl.when(jnp.logical_not(fetched))
                def _zero_v(i=i):
                    v_buf[slot, :, i] = jnp.zeros(v_buf.shape[1:2] + v_buf.shape[3:], v_buf.dtype)

    m_ref[...] = jnp.full(m_ref.shape, MASK_VALUE, jnp.float32)
    denom_ref[...] = jnp.zeros(denom_ref.shape, jnp.float32)
    acc_ref[...] = jnp.zeros(acc_ref.shape, jnp.float32)
    pl.when(num_blocks > 0)(lambda: transfer(0, 0, wait=False))

    q_pos = q_start_ref[row] + lax.div(lax.broadcasted_iota(jnp.int32, (num_q_rows, block_tokens), 0), group)  # [M, T]
    kv_iota = lax.broadcasted_iota(jnp.int32, (num_q_rows, block_tokens), 1)  # [M, T]

    def body(block, carry):
        slot = lax.rem(block, 2)
        pl.when(block + 1 < num_blocks)(lambda: transfer(block + 1, 1 - slot, wait=False))
        transfer(block, slot, wait=True)
        kv_start = block * block_tokens
        kv_pos = kv_start + kv_iota
        visible = (kv_pos <= q_pos) & (kv_pos < context_len)  # [M, T]
        for h in range(num_kv_heads):
            k = k_buf[slot, h].reshape(block_tokens, head_dim)  # [T, H]
            v = v_buf[slot, h].reshape(block_tokens, head_dim)  # [T, H]
            s = lax.dot_general(
                q_ref[h],
                k,
                (((1,), (1,)), ((), ())),
                precision=lax.Precision.HIGHEST,
                preferred_element_type=jnp.float32,
            )  # [M, T]
            s = jnp.where(visible, s, MASK_VALUE)
            m_prev = m_ref[h]  # [M, 128]
            m_cur = s.max(axis=1, keepdims=True)  # [M, 1]
            m_next = jnp.maximum(m_prev, m_cur)  # [M, 128]
            alpha = jnp.exp(m_prev - m_next)
            beta = jnp.exp(m_cur - m_next)
            p = jnp.exp(s - m_cur)  # [M, T]
            m_ref[h] = m_next
            denom_ref[h] = alpha * denom_ref[h] + beta * p.sum(axis=1, keepdims=True)
            pv = lax.dot_general(
                p.astype(v.dtype),
                v,
                (((1,), (0,)), ((), ())),
                precision=lax.Precision.HIGHEST,
                preferred_element_type=jnp.float32,
            )  # [M, H]
            acc_ref[h] = acc_ref[h] * _lanes(alpha, head_dim) + pv * _lanes(beta, head_dim)
        return carry

    lax.fori_loop(0, num_blocks, body, 0)
    for h in range(num_kv_heads):
        denom = denom_ref[h]
        denom = jnp.where(denom == 0.0, 1.0, denom)  # rows with no context (padding) output 0
        o_ref[h] = (acc_ref[h] / _lanes(denom, head_dim)).astype(o_ref.dtype)


def paged_attention(
    q: jax.Array,  # [R, Q, N, H], already scaled by 1/sqrt(H)
    k_pages: jax.Array,  # [K, P, S, H]
    v_pages: jax.Array,  # [K, P, S, H]
    page_table: jax.Array,  # [R, W] int32 page ids, W a multiple of pages_per_block
    q_start: jax.Array,  # [R] int32
    context_lens: jax.Array,  # [R] int32
    num_kv_blocks: jax.Array,  # [] int32, unused: each row walks ceil(context_lens[r] / block tokens) blocks
    pages_per_block: int,
    *,
    vmem_limit_bytes: int | None = None,
    interpret: bool = False,
) -> jax.Array:  # [R, Q, N, H]
    """Real-TPU limits (Mosaic tiling): H <= 128 or a multiple of 128, S a multiple of 8 (f32) or 16 (bf16);
    the flattened page table (R * W int32) must fit in SMEM."""
    del num_kv_blocks
    num_rows, num_q, num_heads, head_dim = q.shape
    num_kv_heads, _, page_size, _ = k_pages.shape
    page_table_width = page_table.shape[1]
    if head_dim > LANES and head_dim % LANES:
        raise ValueError(f"head_dim {head_dim} must be <= {LANES} or a multiple of {LANES}")
    if page_table_width % pages_per_block:
        raise ValueError(f"page-table width {page_table_width} is not a multiple of {pages_per_block=}")
    sublanes = 8 * 4 // q.dtype.itemsize  # rows of one (8, 128) 32-bit tile: 8 for f32, 16 for bf16
    num_q_rows = pl.cdiv(num_q * (num_heads // num_kv_heads), sublanes) * sublanes  # M, padded to whole tiles
    q_rows = fold_heads(q, num_kv_heads, num_q_rows)  # [R, K, M, H]
    row_block = pl.BlockSpec((None, num_kv_heads, num_q_rows, head_dim), lambda r, *_: (r, 0, 0, 0))
    kv_buffer = pltpu.VMEM((2, num_kv_heads, pages_per_block, page_size, head_dim), k_pages.dtype)
    stats = pltpu.VMEM((num_kv_heads, num_q_rows, LANES), jnp.float32)
    out = pl.pallas_call(
        functools.partial(_kernel, page_table_width=page_table_width, group=num_heads // num_kv_heads),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=3,
            grid=(num_rows,),
            in_specs=[row_block, pl.BlockSpec(memory_space=pl.ANY), pl.BlockSpec(memory_space=pl.ANY)],
            out_specs=row_block,
            scratch_shapes=[
                kv_buffer,
                kv_buffer,
                pltpu.SemaphoreType.DMA((2, 2)),
                stats,
                stats,
                pltpu.VMEM((num_kv_heads, num_q_rows, head_dim), jnp.float32),
            ],
        ),
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel",), vmem_limit_bytes=vmem_limit_bytes),
        out_shape=jax.ShapeDtypeStruct(q_rows.shape, q.dtype),
        interpret=interpret,
        name="lamps_paged_attention_tpu",
    )(page_table.reshape(-1), q_start, context_lens, q_rows, k_pages, v_pages)
    return unfold_heads(out, num_q, num_heads)

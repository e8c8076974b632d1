"""Paged attention for CPU: gathers only the pages each row's context uses, a bounded batch at a time.

Same contract as ``reference.paged_attention``. Float32 rows, decode and prefill alike, go to the C++ kernel
``cpu_kernels/paged_attention.cc`` where it builds: it reads each row's pages in place, which XLA
cannot. Otherwise (another dtype, no kernel, ``kernel=False``, a device that is not a CPU) the jnp code below.
Each row's KV is cut into work items of
``pages_per_item`` pages; a row of context c has ceil(c / item tokens) items, a padding row none.
Loops with traced trip counts take a few items per step: a step gathers their pages into one
buffer, scores them against their rows' queries with two batched matmuls, and folds the result
into per-row online-softmax state. One compiled shape serves every context length.

Two schedules pick the items of a step:
- decode rows (Q = 1): a work list. The items of all rows are listed row after row, taken a
  step at a time and merged into their rows by scatter, so the work follows the sum of the rows'
  contexts, not rows x the longest one (padding rows cost nothing). Full steps hold as many pages
  as keep the step's K and V within ``STEP_KV_BYTES``; the tail of the list runs in steps of at
  most ``ROW_PAGES_PER_STEP`` pages per row, so a short list does not gather a full step of padding.
- prefill rows (Q > 1): step j takes item j of every row (rows past their context gather page 0
  and are masked). A work list would scatter [M, H] partials per item, M = Q * G query rows: as
  large as the item's KV, which made it slower than this for the 16-token rows the runner builds.

Layout, chosen by timing XLA's CPU backend (YNNPACK dots): for decode rows the scores are
``kv [T, H] @ q [G, H]^T`` with the big KV operand on the left (2-2.5x faster than the other
order), transposed to [G, T] before the exponential so that the PV product is ``p [G, T] @ v [T, H]``
(a transpose right after the score dot is folded into it, which brings back the slow form). The
GQA group shares one pass over the row's KV. For prefill rows ``q [M, H] @ kv [T, H]^T`` is as fast
and needs no transpose of the larger scores.

Shapes: R rows, Q tokens per row, N query heads, K kv heads, G = N / K, M = Q * G, H head dim,
P pages, S page size, I items per step, T tokens per item.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lamps_jax import cpu_kernels
from lamps_jax.pallas_kernels.reference import MASK_VALUE

PAGES_PER_ITEM = 4  # 64-token items with 16-token pages: a row's context is rounded up to this
# K and V gathered by a full decode step (128 pages of SmolLM2 in f32). Full steps of 1.5-6 MiB time within
# a few % of each other here; much smaller ones pay the per-step cost (~15 ops, scatters) too often.
STEP_KV_BYTES = 3 << 20
ROW_PAGES_PER_STEP = 8  # the cap per row of a decode tail step (a 128-token block per row)


def _dot(lhs: jax.Array, rhs: jax.Array, lhs_contract: int, rhs_contract: int) -> jax.Array:
    """Batched over (kv head, item), the two leading dims of both operands."""
    dims = (((lhs_contract,), (rhs_contract,)), ((0, 1), (0, 1)))
    return jax.lax.dot_general(lhs, rhs, dims, preferred_element_type=jnp.float32)


def decode_step_items(num_rows: int, page_bytes: int, pages_per_item: int) -> tuple[int, int]:
    """(tail, full) items per decode step; ``page_bytes`` is one page's K (or V) over all kv heads."""
    full_pages = max(1, STEP_KV_BYTES // (2 * page_bytes))
    tail_pages = min(full_pages, num_rows * ROW_PAGES_PER_STEP)
    return max(1, tail_pages // pages_per_item), max(1, full_pages // pages_per_item)


def _kernel(q, k_pages, v_pages, page_table, q_start, context_lens) -> jax.Array:
    """The rows through the C++ kernel: ``q [R, Q, N, H]`` -> ``[R, Q, N, H]``."""
    call = jax.ffi.ffi_call(cpu_kernels.PAGED_ATTENTION.target, jax.ShapeDtypeStruct(q.shape, jnp.float32))
    int32 = [x.astype(jnp.int32) for x in (page_table, q_start, context_lens)]
    return call(q, k_pages, v_pages, *int32)


def _kernel_takes(q: jax.Array, k_pages: jax.Array) -> bool:
    """Float32 rows, where the kernel is built."""
    float32 = q.dtype == k_pages.dtype == jnp.float32
    return float32 and cpu_kernels.unavailable(cpu_kernels.PAGED_ATTENTION) is None


def paged_attention(
    q: jax.Array,  # [R, Q, N, H], already scaled by 1/sqrt(H)
    k_pages: jax.Array,  # [K, P, S, H]
    v_pages: jax.Array,  # [K, P, S, H]
    page_table: jax.Array,  # [R, W] int32 page ids
    q_start: jax.Array,  # [R] int32 position of each row's first query token
    context_lens: jax.Array,  # [R] int32 KV tokens visible to the row (its own tokens included)
    num_kv_blocks: jax.Array,  # [] int32 caps the walk at num_kv_blocks * pages_per_block pages
    pages_per_block: int,
    *,
    pages_per_item: int = PAGES_PER_ITEM,
    step_items: tuple[int, int] | None = None,  # decode (tail, full) items per step; default: decode_step_items
    kernel: bool = True,  # the rows through the C++ kernel where it applies; False: the jnp code
) -> jax.Array:  # [R, Q, N, H]
    num_rows, num_q, num_heads, head_dim = q.shape
    num_kv_heads, _, page_size, _ = k_pages.shape
    context_lens = jnp.clip(context_lens, 0, num_kv_blocks * pages_per_block * page_size)
    if kernel and _kernel_takes(q, k_pages):
        return _kernel(q, k_pages, v_pages, page_table, q_start, context_lens)
    group = num_heads // num_kv_heads
    item_tokens = pages_per_item * page_size

    # Page table as [R, items per row, pages per item], padded with page 0.
    width = page_table.shape[1]
    items_per_row = -(-width // pages_per_item)
    item_pages = jnp.pad(page_table, ((0, 0), (0, items_per_row * pages_per_item - width)))
    item_pages = item_pages.reshape(num_rows, items_per_row, pages_per_item)
    # Query rows per kv head, (token, group) order: [K, R, M, H].
    qk = q.reshape(num_rows, num_q, num_kv_heads, group, head_dim).transpose(2, 0, 1, 3, 4)
    qk = qk.reshape(num_kv_heads, num_rows, num_q * group, head_dim).astype(k_pages.dtype)
    # KV positions below limit[r, m] are visible to matmul row m of row r: causal and within the context.
    q_pos = q_start[:, None] + jnp.arange(num_q, dtype=jnp.int32)[None, :]  # [R, Q]
    limit = jnp.repeat(jnp.minimum(q_pos + 1, context_lens[:, None]), group, axis=1)  # [R, M]
    row_items = (context_lens + item_tokens - 1) // item_tokens  # [R]

    def gather(pages: jax.Array, ids: jax.Array) -> jax.Array:  # ids [I, pages per item] -> [K, I, T, H]
        return pages[:, ids].reshape(num_kv_heads, ids.shape[0], item_tokens, head_dim)

    def visibility(row_limit: jax.Array, col: jax.Array, live: jax.Array) -> jax.Array:  # -> [I, T, M]
        kv_pos = col[:, None] * item_tokens + jnp.arange(item_tokens, dtype=jnp.int32)[None, :]  # [I, T]
        return (kv_pos[:, :, None] < row_limit[:, None, :]) & live[:, None, None]

    stats_shape = (num_kv_heads, num_rows, num_q * group)
    state = (
        jnp.full(stats_shape, MASK_VALUE, jnp.float32),  # running max
        jnp.zeros(stats_shape, jnp.float32),  # softmax denominator
        jnp.zeros((*stats_shape, head_dim), jnp.float32),  # unnormalised output
    )

    if num_q == 1:
        ends = jnp.cumsum(row_items)  # the work list: row r owns items ends[r] - row_items[r] .. ends[r] - 1
        total = ends[-1]

        def decode_step(first: jax.Array, num_items: int, state: tuple) -> tuple:
            m, denom, acc = state  # [K, R, G], [K, R, G], [K, R, G, H]
            item = first + jnp.arange(num_items, dtype=jnp.int32)  # [I]
            live = item < total
            row = jnp.minimum(jnp.sum(item[:, None] >= ends[None, :], axis=1), num_rows - 1).astype(jnp.int32)
            col = jnp.clip(item - ends[row] + row_items[row], 0, items_per_row - 1)
            ids = jnp.where(live[:, None], item_pages[row, col], 0)  # [I, pages per item]
            visible = visibility(limit[row], col, live)  # [I, T, G]
            s = _dot(gather(k_pages, ids), qk[:, row], 3, 3)  # [K, I, T, G]
            # Masked before the transpose: a transpose right after the dot would be folded into it.
            s = jnp.swapaxes(jnp.where(visible[None], s, MASK_VALUE), 2, 3)  # [K, I, G, T]
            m_new = m.at[:, row].max(s.max(axis=-1))
            p = jnp.exp(s - m_new[:, row][..., None])
            p = jnp.where(jnp.swapaxes(visible, 1, 2)[None], p, 0.0)  # exact zeros while a row has seen nothing
            pv = _dot(p.astype(v_pages.dtype), gather(v_pages, ids), 3, 2)  # [K, I, G, H]
            correction = jnp.exp(m - m_new)
            denom = (denom * correction).at[:, row].add(p.sum(axis=-1))
            acc = (acc * correction[..., None]).at[:, row].add(pv)
            return m_new, denom, acc

        page_bytes = num_kv_heads * page_size * head_dim * k_pages.dtype.itemsize
        tail, full = step_items or decode_step_items(num_rows, page_bytes, pages_per_item)
        num_full = total // full if full > tail else 0
        state = jax.lax.fori_loop(0, num_full, lambda j, st: decode_step(j * full, full, st), state)
        done = num_full * full
        num_tail = (total - done + tail - 1) // tail
        state = jax.lax.fori_loop(0, num_tail, lambda j, st: decode_step(done + j * tail, tail, st), state)
    else:

        def prefill_step(j: jax.Array, state: tuple) -> tuple:
            m, denom, acc = state  # [K, R, M], [K, R, M], [K, R, M, H]
            col = jnp.full((num_rows,), j, jnp.int32)
            live = col < row_items
            ids = jnp.where(live[:, None], item_pages[:, j], 0)  # [R, pages per item]
            visible = jnp.swapaxes(visibility(limit, col, live), 1, 2)[None]  # [1, R, M, T]
            s = jnp.where(visible, _dot(qk, gather(k_pages, ids), 3, 3), MASK_VALUE)  # [K, R, M, T]
            m_new = jnp.maximum(m, s.max(axis=-1))
            p = jnp.where(visible, jnp.exp(s - m_new[..., None]), 0.0)
            pv = _dot(p.astype(v_pages.dtype), gather(v_pages, ids), 3, 2)  # [K, R, M, H]
            correction = jnp.exp(m - m_new)
            return m_new, denom * correction + p.sum(axis=-1), acc * correction[..., None] + pv

        state = jax.lax.fori_loop(0, row_items.max(), prefill_step, state)

    _, denom, acc = state
    out = acc / jnp.maximum(denom, 1e-30)[..., None]  # rows with no context: 0
    out = out.reshape(num_kv_heads, num_rows, num_q, group, head_dim).transpose(1, 2, 0, 3, 4)
    return out.reshape(num_rows, num_q, num_heads, head_dim).astype(q.dtype)


paged_attention_jnp = functools.partial(paged_attention, kernel=False)  # no C++ kernel: any device

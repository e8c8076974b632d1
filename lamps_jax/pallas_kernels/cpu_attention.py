"""Paged attention for CPU: gathers only the pages each row's context uses, a bounded batch at a time.

Same contract as ``reference.paged_attention``. Each row's KV is cut into work items of
``pages_per_item`` pages; a row of context c has ceil(c / item tokens) items, a padding row none.
A loop with a traced trip count takes a few items per step: it gathers their pages into one
buffer, scores them against their rows' queries with two batched matmuls, and folds the result
into per-row online-softmax state. One compiled shape serves every context length.

Two schedules pick the items of a step:
- decode rows (Q = 1): a work list. The items of all rows are listed row after row and taken
  ``items_per_step`` at a time, merged into their rows by scatter, so the work follows the sum of
  the rows' contexts, not rows x the longest one (padding rows cost nothing).
- prefill rows (Q > 1): step j takes item j of every row (rows past their context gather page 0
  and are masked). A work list would scatter [M, H] partials per item, M = Q * G query rows: as
  large as the item's KV, which made it slower than this for the 16-token rows the runner builds.

Layout, chosen by timing XLA's CPU backend (YNNPACK dots): scores are ``kv [T, H] @ q [M, H]^T``
with the big KV operand on the left (2-2.5x faster than the other order), then transposed to
[M, T] before the exponential so that the PV product is ``p [M, T] @ v [T, H]`` (a transpose
right after the score dot is folded into it, which brings back the slow form). A decode row's
grouped query heads share one pass over its KV.

Shapes: R rows, Q tokens per row, N query heads, K kv heads, G = N / K, M = Q * G, H head dim,
P pages, S page size, I items per step, T tokens per item.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lamps_jax.pallas_kernels.reference import MASK_VALUE

PAGES_PER_ITEM = 4  # 64-token items with 16-token pages: a row's context is rounded up to this
ROW_PAGES_PER_STEP = 8  # a decode step gathers (rows x this) pages, as a 128-token block per row would


def _dot(lhs: jax.Array, rhs: jax.Array, lhs_contract: int, rhs_contract: int) -> jax.Array:
    """Batched over (kv head, item), the two leading dims of both operands."""
    dims = (((lhs_contract,), (rhs_contract,)), ((0, 1), (0, 1)))
    return jax.lax.dot_general(lhs, rhs, dims, preferred_element_type=jnp.float32)


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
    items_per_step: int | None = None,  # decode work list; default R * ROW_PAGES_PER_STEP / pages_per_item
) -> jax.Array:  # [R, Q, N, H]
    num_rows, num_q, num_heads, head_dim = q.shape
    num_kv_heads, _, page_size, _ = k_pages.shape
    group = num_heads // num_kv_heads
    item_tokens = pages_per_item * page_size
    work_list = num_q == 1
    per_step = (items_per_step or max(1, num_rows * ROW_PAGES_PER_STEP // pages_per_item)) if work_list else num_rows

    # Page table as [R, items per row, pages per item], padded with page 0.
    width = page_table.shape[1]
    items_per_row = -(-width // pages_per_item)
    item_pages = jnp.pad(page_table, ((0, 0), (0, items_per_row * pages_per_item - width)))
    item_pages = item_pages.reshape(num_rows, items_per_row, pages_per_item)

    # Query rows per kv head, (token, group) order: [K, R, M, H].
    qk = q.reshape(num_rows, num_q, num_kv_heads, group, head_dim).transpose(2, 0, 1, 3, 4)
    qk = qk.reshape(num_kv_heads, num_rows, num_q * group, head_dim).astype(k_pages.dtype)
    # KV positions below limit[r, m] are visible to matmul row m of row r: causal and within the context.
    context_lens = jnp.clip(context_lens, 0, num_kv_blocks * pages_per_block * page_size)
    q_pos = q_start[:, None] + jnp.arange(num_q, dtype=jnp.int32)[None, :]  # [R, Q]
    limit = jnp.repeat(jnp.minimum(q_pos + 1, context_lens[:, None]), group, axis=1)  # [R, M]
    row_items = (context_lens + item_tokens - 1) // item_tokens  # [R]
    # Work list: row r owns items starts[r] .. ends[r] - 1.
    ends = jnp.cumsum(row_items)
    starts = ends - row_items

    def schedule(j: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:  # -> row, col, live: [I] each
        if not work_list:
            col = jnp.full((num_rows,), j, jnp.int32)
            return jnp.arange(num_rows, dtype=jnp.int32), col, col < row_items
        item = j * per_step + jnp.arange(per_step, dtype=jnp.int32)
        row = jnp.minimum(jnp.sum(item[:, None] >= ends[None, :], axis=1), num_rows - 1).astype(jnp.int32)
        return row, jnp.clip(item - starts[row], 0, items_per_row - 1), item < ends[-1]

    def per_row(x: jax.Array, row: jax.Array) -> jax.Array:  # [K, R, ...] -> [K, I, ...]
        return x[:, row] if work_list else x

    def merge(x: jax.Array, row: jax.Array, update: jax.Array, op: str) -> jax.Array:  # [K, I, ...] into [K, R, ...]
        if not work_list:
            return jnp.maximum(x, update) if op == "max" else x + update
        return x.at[:, row].max(update) if op == "max" else x.at[:, row].add(update)

    def gather(pages: jax.Array, ids: jax.Array) -> jax.Array:  # ids [I, pages per item] -> [K, I, T, H]
        return pages[:, ids].reshape(num_kv_heads, per_step, item_tokens, head_dim)

    def step(j, carry):
        m, denom, acc = carry  # [K, R, M], [K, R, M], [K, R, M, H]
        row, col, live = schedule(j)
        ids = jnp.where(live[:, None], item_pages[row, col], 0)  # [I, pages per item]
        kv_pos = col[:, None] * item_tokens + jnp.arange(item_tokens, dtype=jnp.int32)[None, :]  # [I, T]
        row_limit = limit[row] if work_list else limit  # [I, M]
        visible = (kv_pos[:, :, None] < row_limit[:, None, :]) & live[:, None, None]  # [I, T, M]

        if work_list:  # M = G is tiny: the KV-first product is much faster; transpose the small scores
            s = _dot(gather(k_pages, ids), qk[:, row], 3, 3)  # [K, I, T, M]
            # Masked before the transpose: a transpose right after the dot would be folded into it.
            s = jnp.swapaxes(jnp.where(visible[None], s, MASK_VALUE), 2, 3)  # [K, I, M, T]
        else:  # M = Q * G: transposing [T, M] scores costs more than the KV-first product saves
            s = _dot(qk, gather(k_pages, ids), 3, 3)  # [K, R, M, T]
            s = jnp.where(jnp.swapaxes(visible, 1, 2)[None], s, MASK_VALUE)
        m_new = merge(m, row, s.max(axis=-1), "max")
        p = jnp.exp(s - per_row(m_new, row)[..., None])
        p = jnp.where(jnp.swapaxes(visible, 1, 2)[None], p, 0.0)  # exact zeros while a row has seen nothing
        pv = _dot(p.astype(v_pages.dtype), gather(v_pages, ids), 3, 2)  # [K, I, M, H]
        correction = jnp.exp(m - m_new)
        denom = merge(denom * correction, row, p.sum(axis=-1), "add")
        acc = merge(acc * correction[..., None], row, pv, "add")
        return m_new, denom, acc

    stats_shape = (num_kv_heads, num_rows, num_q * group)
    init = (
        jnp.full(stats_shape, MASK_VALUE, jnp.float32),
        jnp.zeros(stats_shape, jnp.float32),
        jnp.zeros((*stats_shape, head_dim), jnp.float32),
    )
    num_steps = (ends[-1] + per_step - 1) // per_step if work_list else row_items.max()
    _, denom, acc = jax.lax.fori_loop(0, num_steps, step, init)
    out = acc / jnp.maximum(denom, 1e-30)[..., None]  # rows with no context: 0
    out = out.reshape(num_kv_heads, num_rows, num_q, group, head_dim).transpose(1, 2, 0, 3, 4)
    return out.reshape(num_rows, num_q, num_heads, head_dim).astype(q.dtype)

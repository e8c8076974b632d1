"""A ragged batch of paged-attention arguments, to check a kernel against the reference (tests, device checks).

Row r has ``num_valid[r]`` query tokens ending at ``contexts[r]`` (a row of context 0 is padding); K and V pages are
random, and each row's pages are drawn from a random permutation of the pool, page 0 (the padding page) excepted.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np


def ragged_batch(
    rng: np.random.Generator,
    contexts: Sequence[int],
    num_valid: Sequence[int],
    num_q: int,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    page_size: int,
    num_pages: int,
    width: int,
    block_tokens: int,
    dtype,
    kv_scale: float = 1.0,
) -> tuple:
    """(q, k_pages, v_pages, page_table, q_start, context_lens, num_kv_blocks) in the kernels' argument order."""
    q = rng.standard_normal((len(contexts), num_q, num_heads, head_dim)) / np.sqrt(head_dim)
    k_pages, v_pages = kv_scale * rng.standard_normal((2, num_kv_heads, num_pages, page_size, head_dim))
    page_ids = iter(rng.permutation(np.arange(1, num_pages)))
    page_table = np.zeros((len(contexts), width), np.int32)
    for row, context in enumerate(contexts):
        for col in range(-(-context // page_size)):
            page_table[row, col] = next(page_ids)
    context_lens = np.asarray(contexts, np.int32)
    return (
        jnp.asarray(q, dtype),
        jnp.asarray(k_pages, dtype),
        jnp.asarray(v_pages, dtype),
        jnp.asarray(page_table),
        jnp.asarray(context_lens - np.asarray(num_valid, np.int32)),
        jnp.asarray(context_lens),
        jnp.asarray(max(1, -(-max(contexts) // block_tokens)), jnp.int32),
    )

"""A ragged batch of paged-attention arguments, to check a kernel against the reference (tests, device checks).

Row r has ``num_valid[r]`` query tokens ending at ``contexts[r]`` (a row of context 0 is padding); K and V pages are
random, and each row's pages are drawn from a random permutation of the pool, page 0 (the padding page) excepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class BatchLayout:
    """A fixed set of rows to check kernels on (each row's context and valid query tokens) and the page layout."""

    contexts: tuple[int, ...]
    valid: tuple[int, ...]  # valid query tokens per row, capped at Q
    page_size: int
    pages_per_block: int
    head_dim: int
    num_kv_heads: int
    width: int  # page-table width
    num_pages: int | None = None  # default: the padding page and just enough for the contexts

    def batch(self, num_q: int, group: int, dtype, seed: int = 0) -> tuple[tuple, np.ndarray]:
        """Kernel arguments (``group`` query heads per kv head) and the [R, Q] mask of valid query tokens."""
        num_valid = np.minimum(self.valid, num_q)
        num_pages = self.num_pages or 1 + sum(-(-c // self.page_size) for c in self.contexts)
        args = ragged_batch(
            np.random.default_rng(seed),
            self.contexts,
            num_valid,
            num_q,
            self.num_kv_heads * group,
            self.num_kv_heads,
            self.head_dim,
            self.page_size,
            num_pages,
            self.width,
            self.pages_per_block * self.page_size,
            dtype,
        )
        return args, np.arange(num_q)[None, :] < num_valid[:, None]

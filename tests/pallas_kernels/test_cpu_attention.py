"""The CPU paged attention equals the jnp reference and dense causal attention, with one compiled shape.

Rows run through the C++ kernel (where it builds; decode rows by dot products, rows of 8+ query vectors against
transposed keys) and through the jnp code (a work list for decode rows). Random batches
(hypothesis) mix decode and Q > 1 rows, padding rows, contexts of 0 and 1 tokens,
chunks that cross page boundaries, GQA groups, shuffled page ids and junk in page 0 and in the
unused pages; items of 1-4 pages, work-list steps of 1 item up to the default size, full steps
followed by a tail of smaller ones. Only valid query tokens are compared; padding ones must be finite.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lamps_jax import cpu_kernels
from lamps_jax.config import EngineConfig
from lamps_jax.cpu_kernels import build
from lamps_jax.pallas_kernels import cpu_attention, reference
from lamps_jax.pallas_kernels.ops import ATTENTION_IMPLS, paged_attention_fn, resolve_attention_impl
from lamps_jax.pallas_kernels.ragged_batch import ragged_batch
from tests.pallas_kernels.test_engine_pallas import greedy_tokens

HEAD_DIM = 8
NUM_PAGES = 64  # enough for 5 rows of a full page table
ATOL = 2e-5  # f32: equal up to summation order


@functools.cache
def jitted(fn, **kwargs):
    return jax.jit(functools.partial(fn, **kwargs), static_argnums=7)


def make_batch(rng: np.random.Generator, contexts, num_valid, num_q, group, num_kv_heads, page_size, width, dtype):
    """Kernel arguments: row r holds num_valid[r] real query tokens ending at contexts[r]; 2 KV blocks per table."""
    return ragged_batch(
        rng,
        contexts,
        num_valid,
        num_q,
        num_kv_heads * group,
        num_kv_heads,
        HEAD_DIM,
        page_size,
        NUM_PAGES,
        width,
        width * page_size // 2,
        dtype,
        kv_scale=2.0,
    )


# Static layouts (each compiles once): Q, kv heads, GQA group, page size, page-table width,
# pages per item, decode (tail, full) items per step. Hypothesis varies the data within them.
LAYOUTS = (
    (1, 2, 3, 4, 8, 4, None),  # decode, default steps
    (1, 1, 3, 4, 8, 1, (2, 5)),  # decode, 1-page items: full steps of 5, then a tail in steps of 2
    (1, 2, 1, 2, 12, 3, (1, 1)),  # decode, items of 3 pages that do not divide the table, one per step
    (1, 2, 3, 4, 8, 2, (3, 4)),
    (3, 2, 3, 4, 8, 3, None),  # prefill rows of 3 tokens
    (8, 1, 3, 2, 12, 4, None),  # prefill rows of 8 tokens over pages of 2
    (8, 2, 1, 4, 8, 1, None),
)
NUM_ROWS = 5


@st.composite
def batches(draw):
    num_q, num_kv_heads, group, page_size, width, pages_per_item, step_items = draw(st.sampled_from(LAYOUTS))
    max_context = width * page_size
    tiny_or_any = st.one_of(st.sampled_from([0, 1, page_size, max_context]), st.integers(0, max_context))
    contexts = draw(st.lists(tiny_or_any, min_size=NUM_ROWS, max_size=NUM_ROWS))
    num_valid = [draw(st.integers(min(c, 1), min(c, num_q))) for c in contexts]
    return {
        "seed": draw(st.integers(0, 2**16)),
        "contexts": contexts,
        "num_valid": num_valid,
        "num_q": num_q,
        "group": group,
        "num_kv_heads": num_kv_heads,
        "page_size": page_size,
        "width": width,
        "pages_per_item": pages_per_item,
        "step_items": step_items,
        "kernel": draw(st.booleans()),
    }


def valid_mask(contexts, num_valid, num_q: int) -> np.ndarray:
    return np.arange(num_q)[None, :] < np.asarray(num_valid)[:, None]


@settings(max_examples=60, deadline=None)
@given(batches())
def test_matches_reference(case) -> None:
    rng = np.random.default_rng(case["seed"])
    args = make_batch(
        rng, case["contexts"], case["num_valid"], case["num_q"], case["group"], case["num_kv_heads"],
        case["page_size"], case["width"], jnp.float32,
    )  # fmt: skip
    pages_per_block = case["width"] // 2
    want = np.asarray(jitted(reference.paged_attention)(*args, pages_per_block))
    kwargs = {k: case[k] for k in ("pages_per_item", "step_items", "kernel")}
    got = np.asarray(jitted(cpu_attention.paged_attention, **kwargs)(*args, pages_per_block))
    assert got.shape == want.shape and got.dtype == want.dtype
    assert np.isfinite(got).all()
    valid = valid_mask(case["contexts"], case["num_valid"], case["num_q"])
    error = np.abs(got - want)[valid].max(initial=0.0)
    assert error <= ATOL, f"max error {error}"


@pytest.mark.parametrize(("num_q", "group"), [(1, 3), (5, 3), (16, 1)])
def test_matches_dense_attention(num_q: int, group: int) -> None:
    """One 37-token sequence cut into rows of num_q tokens (crossing pages of 4) equals dense causal attention."""
    rng = np.random.default_rng(num_q)
    num_tokens, num_kv_heads, page_size, width = 37, 2, 4, 12
    q = rng.standard_normal((num_tokens, num_kv_heads * group, HEAD_DIM)).astype(np.float32) / np.sqrt(HEAD_DIM)
    k, v = rng.standard_normal((2, num_tokens, num_kv_heads, HEAD_DIM)).astype(np.float32)
    want = np.asarray(reference.dense_causal_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)))

    page_ids = 1 + rng.permutation(NUM_PAGES - 1)[:width]  # shuffled, non-contiguous
    k_pages, v_pages = rng.standard_normal((2, num_kv_heads, NUM_PAGES, page_size, HEAD_DIM)).astype(np.float32)
    for pos in range(num_tokens):
        k_pages[:, page_ids[pos // page_size], pos % page_size] = k[pos]
        v_pages[:, page_ids[pos // page_size], pos % page_size] = v[pos]
    starts = np.arange(0, num_tokens, num_q)
    q_rows = np.zeros((len(starts), num_q, *q.shape[1:]), np.float32)
    for row, start in enumerate(starts):
        q_rows[row, : min(num_q, num_tokens - start)] = q[start : start + num_q]
    context_lens = np.minimum(starts + num_q, num_tokens).astype(np.int32)
    args = (
        jnp.asarray(q_rows),
        jnp.asarray(k_pages),
        jnp.asarray(v_pages),
        jnp.asarray(np.tile(page_ids, (len(starts), 1)).astype(np.int32)),
        jnp.asarray(starts.astype(np.int32)),
        jnp.asarray(context_lens),
        jnp.asarray(2, jnp.int32),
    )
    got = np.asarray(jitted(cpu_attention.paged_attention)(*args, width // 2))
    got = got.reshape(-1, *q.shape[1:])[:num_tokens]
    np.testing.assert_allclose(got, want, atol=ATOL)


@pytest.mark.parametrize("kernel", [True, False])
@pytest.mark.parametrize("num_q", [1, 4])
def test_padding_rows_and_tiny_contexts(kernel: bool, num_q: int) -> None:
    """All-padding batches give zeros; rows of context 0 and 1 sit beside long ones."""
    rng = np.random.default_rng(0)
    for contexts, num_valid in (([0, 0, 0], [0, 0, 0]), ([1, 0, 29, 1], [1, 0, 1, 1])):
        args = make_batch(rng, contexts, num_valid, num_q, 3, 2, 4, 8, jnp.float32)
        got = np.asarray(jitted(cpu_attention.paged_attention, kernel=kernel)(*args, 4))
        want = np.asarray(jitted(reference.paged_attention)(*args, 4))
        valid = valid_mask(contexts, num_valid, num_q)
        np.testing.assert_allclose(got[valid], want[valid], atol=ATOL)
        assert not got[np.asarray(num_valid) == 0].any()  # padding rows (nothing to attend to) are exact zeros


def test_the_kernel_builds_where_a_compiler_is() -> None:
    """Otherwise every kernel=True case above would quietly run the jnp code."""
    if os.environ.get(build.DISABLE_ENV) == "0":
        pytest.skip(f"the kernels are turned off ({build.DISABLE_ENV}=0)")
    try:
        build._compiler()
    except build.KernelUnavailable:
        pytest.skip("no C++ compiler on this machine")
    assert cpu_kernels.unavailable(cpu_kernels.PAGED_ATTENTION) is None


@pytest.mark.parametrize("num_q", [1, 3, 16])
def test_kernel_at_the_served_head_dim_and_page_size(num_q: int) -> None:
    """Head dim 64 and pages of 16 (SmolLM2's): the kernel's register-blocked path for prefill rows (four queries
    at a time; 3 tokens x 3 heads leave one query to the plain path) and its dot products for decode rows, beside
    rows of context 0 and 1 and rows with padding tokens."""
    rng = np.random.default_rng(5)
    contexts = [0, 1, 17, 100, 250, 16, 33, 256]
    num_valid = [min(c, num_q, n) for c, n in zip(contexts, [0, 1, 16, 16, 5, 16, 9, 16])]
    args = ragged_batch(rng, contexts, num_valid, num_q, 9, 3, 64, 16, 128, 16, 128, jnp.float32, kv_scale=2.0)
    got = np.asarray(jitted(cpu_attention.paged_attention)(*args, 8))
    want = np.asarray(jitted(reference.paged_attention)(*args, 8))
    valid = valid_mask(contexts, num_valid, num_q)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got[valid], want[valid], atol=ATOL)


def test_bfloat16_matches_reference() -> None:
    rng = np.random.default_rng(1)
    contexts, num_valid = [13, 1, 30, 0], [4, 1, 2, 0]
    args = make_batch(rng, contexts, num_valid, 4, 3, 2, 4, 8, jnp.bfloat16)
    got = np.asarray(jitted(cpu_attention.paged_attention)(*args, 4), np.float32)
    want = np.asarray(jitted(reference.paged_attention)(*args, 4), np.float32)
    valid = valid_mask(contexts, num_valid, 4)
    assert np.abs(got - want)[valid].max() <= 2e-2  # p is rounded to bf16 before the PV product


@pytest.mark.parametrize("num_q", [1, 4])
def test_one_compiled_shape_for_every_context(num_q: int) -> None:
    traces = []

    def counted(*args):
        traces.append(1)  # runs only while tracing
        return cpu_attention.paged_attention(*args, 4)

    fn = jax.jit(counted)
    rng = np.random.default_rng(2)
    for contexts in ([4, 4], [1, 32], [0, 17], [32, 32]):
        num_valid = [min(c, num_q) for c in contexts]
        jax.block_until_ready(fn(*make_batch(rng, contexts, num_valid, num_q, 3, 2, 4, 8, jnp.float32)))
    assert len(traces) == 1


@pytest.mark.skipif(cpu_kernels.unavailable(cpu_kernels.PAGED_ATTENTION) is not None, reason="no attention kernel")
def test_kernel_refuses_a_page_id_out_of_range() -> None:
    """A corrupt page table is an error with a reason, not a read past the KV pages."""
    rng = np.random.default_rng(4)
    q, k_pages, v_pages, page_table, q_start, context_lens, num_blocks = make_batch(
        rng, [9, 5], [1, 1], 1, 3, 2, 4, 8, jnp.float32
    )
    page_table = np.asarray(page_table).copy()
    page_table[0, 1] = NUM_PAGES  # the second page of row 0 (tokens 4..7): one past the last page
    with pytest.raises(Exception, match="page id out of range"):
        jax.block_until_ready(
            jitted(cpu_attention.paged_attention)(q, k_pages, v_pages, page_table, q_start, context_lens, num_blocks, 4)
        )


def test_dispatch_and_config() -> None:
    assert "cpu" in ATTENTION_IMPLS
    assert resolve_attention_impl("auto", "cpu") == "cpu"
    assert resolve_attention_impl("auto", "tpu") == "pallas"
    assert resolve_attention_impl("reference", "cpu") == "reference"  # the oracle stays selectable
    assert paged_attention_fn("cpu", "cpu") is cpu_attention.paged_attention
    assert paged_attention_fn("cpu", "gpu") is cpu_attention.paged_attention_jnp  # the C++ kernel is CPU-only
    assert EngineConfig(attention_impl="cpu").attention_impl == "cpu"


def test_engine_equals_reference_engine(tiny_model) -> None:
    """Prompts of one, two and three prefill chunks, then decodes across KV blocks: the same greedy tokens."""
    assert greedy_tokens(tiny_model, "cpu") == greedy_tokens(tiny_model, "reference")

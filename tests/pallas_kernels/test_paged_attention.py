"""The Pallas kernels equal the jnp reference on tiny ragged batches, and lower for their hardware.

Each batch mixes a 1-token context, exact page and KV-block multiples, a context that ends inside
its last block (so the TPU kernel skips pages), a padding row, and Q > 1 rows cut short (padding
tokens); page tables are permuted and page 0 holds junk, as padding writes leave it. The TPU kernel
runs twice: under the generic interpreter and under the TPU simulator (DMAs, semaphores, NaN-filled
scratch). Only valid query tokens are compared; padding ones must be finite.
"""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu

from lamps_jax.pallas_kernels import reference
from lamps_jax.pallas_kernels.gpu import paged_attention as gpu_kernel
from lamps_jax.pallas_kernels.ragged_batch import BatchLayout
from lamps_jax.pallas_kernels.tpu import paged_attention as tpu_kernel

PAGES_PER_BLOCK = 4  # 16-token KV blocks: tl.dot needs >= 16
LAYOUT = BatchLayout(
    contexts=(1, 8, 16, 37, 0, 6),  # 1 token, a page multiple, a block multiple, a partial block, padding, short
    valid=(1, 4, 3, 4, 0, 2),
    page_size=4,
    pages_per_block=PAGES_PER_BLOCK,
    head_dim=16,
    num_kv_heads=2,
    width=12,  # 3 KV blocks, 48 tokens
    num_pages=24,
)
# max |kernel - reference| allowed: f32 is exact up to summation order; bf16 kernels round the
# softmax weights to bf16 before the PV matmul (as flash attention does) and outputs are bf16.
ATOL = {jnp.float32: 2e-5, jnp.bfloat16: 2e-2}


@contextlib.contextmanager
def tpu_simulator():
    try:
        with pltpu.force_tpu_interpret_mode(pltpu.InterpretParams(detect_races=True)):
            yield
    except Exception:
        pltpu.reset_tpu_interpret_mode_state()
        raise


KERNELS = {
    "gpu-interpret": (functools.partial(gpu_kernel.paged_attention, interpret=True), contextlib.nullcontext),
    "gpu-interpret-3-splits": (
        functools.partial(gpu_kernel.paged_attention, interpret=True, num_splits=3),
        contextlib.nullcontext,
    ),
    "tpu-interpret": (functools.partial(tpu_kernel.paged_attention, interpret=True), contextlib.nullcontext),
    "tpu-simulator": (tpu_kernel.paged_attention, tpu_simulator),
}


def check(kernel_name: str, num_q: int, group: int, dtype) -> float:
    kernel, context = KERNELS[kernel_name]
    args, valid = LAYOUT.batch(num_q, group, dtype)
    want = np.asarray(reference.paged_attention(*args, PAGES_PER_BLOCK), np.float32)
    with context():
        got = np.asarray(jax.jit(kernel, static_argnums=7)(*args, PAGES_PER_BLOCK), np.float32)
    assert got.shape == want.shape
    assert np.isfinite(got).all()
    error = np.abs(got - want)[valid].max()
    assert error <= ATOL[dtype], f"{kernel_name} Q={num_q} G={group} {jnp.dtype(dtype).name}: max error {error}"
    return float(error)


@pytest.mark.parametrize("kernel_name", ["gpu-interpret", "tpu-interpret", "tpu-simulator"])
@pytest.mark.parametrize(("num_q", "group"), [(1, 1), (1, 4), (4, 1), (4, 4)])
def test_kernel_matches_reference_f32(kernel_name: str, num_q: int, group: int) -> None:
    check(kernel_name, num_q, group, jnp.float32)


@pytest.mark.parametrize("kernel_name", ["gpu-interpret", "tpu-simulator"])
def test_kernel_matches_reference_bf16(kernel_name: str) -> None:
    check(kernel_name, 4, 4, jnp.bfloat16)


@pytest.mark.parametrize(("num_q", "group"), [(1, 4), (4, 1)])
def test_gpu_split_k_matches_reference(num_q: int, group: int) -> None:
    """3 splits of rows with 1-3 blocks: splits with no blocks must drop out of the merge."""
    check("gpu-interpret-3-splits", num_q, group, jnp.float32)


def _lower(kernel, platform: str, num_q: int, dtype) -> str:
    """Lowers a serving-sized call (GQA 4, bf16 pages of 16 tokens) for ``platform`` without its hardware."""
    shape = jax.ShapeDtypeStruct
    rows, num_pages, width = 8, 256, 64
    args = (
        shape((rows, num_q, 32, 128), dtype),
        shape((8, num_pages, 16, 128), dtype),
        shape((8, num_pages, 16, 128), dtype),
        shape((rows, width), jnp.int32),
        shape((rows,), jnp.int32),
        shape((rows,), jnp.int32),
        shape((), jnp.int32),
    )
    return jax.jit(kernel, static_argnums=7).trace(*args, 8).lower(lowering_platforms=(platform,)).as_text()


@pytest.mark.parametrize("num_q", [1, 16])
def test_tpu_kernel_lowers_to_mosaic(num_q: int) -> None:
    assert "tpu_custom_call" in _lower(tpu_kernel.paged_attention, "tpu", num_q, jnp.bfloat16)


@pytest.mark.parametrize("num_q", [1, 16])
def test_gpu_kernel_lowers_to_triton(num_q: int) -> None:
    # The Triton lowering reads the target GPU from the device or, with none present, an abstract one.
    h100 = jax.sharding.AbstractDevice("NVIDIA H100 80GB HBM3", 132, "gpu")
    with jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((1,), ("x",), abstract_device=h100)):
        assert "triton" in _lower(gpu_kernel.paged_attention, "cuda", num_q, jnp.bfloat16)

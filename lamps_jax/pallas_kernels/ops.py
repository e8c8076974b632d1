"""Chooses the paged-attention implementation: ``auto``, ``reference``, ``cpu`` or ``pallas``.

Every implementation has the signature of ``reference.paged_attention`` and reads the same KV
layout: per layer ``[K, P, S, H]`` K and V page arrays (kv head, page, slot in page, head dim),
page 0 the padding page that padded page-table slots and padding tokens point at, page tables
``[R, W]`` with W a multiple of the pages-per-block. ``pallas`` is the Mosaic kernel
(``tpu/paged_attention.py``) on TPU, the Triton kernel (``gpu/paged_attention.py``) on GPU, and on
CPU that Triton kernel run by the Pallas interpreter, unsplit: slow, for end-to-end checks.
``cpu`` is ``cpu_attention.py``: jnp, laid out for XLA's CPU backend, walking only the pages each
row's context uses (float32 rows through its C++ kernel on a CPU device). ``auto`` picks ``pallas`` on
TPU/GPU and ``cpu`` elsewhere (CPU); ``reference`` stays selectable as the oracle.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax

from lamps_jax.pallas_kernels import cpu_attention, reference

ATTENTION_IMPLS = ("auto", "reference", "cpu", "pallas")
GPU_BACKENDS = ("gpu", "cuda", "rocm")


def resolve_attention_impl(impl: str, backend: str | None = None) -> str:
    """``auto`` -> ``pallas`` on TPU/GPU, ``cpu`` elsewhere; other names pass through."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"unknown attention_impl {impl!r}; choose one of {ATTENTION_IMPLS}")
    if impl != "auto":
        return impl
    return "pallas" if (backend or jax.default_backend()) in ("tpu", *GPU_BACKENDS) else "cpu"


def paged_attention_fn(impl: str, backend: str | None = None) -> Callable:
    """The paged-attention function for a resolved implementation name on ``backend`` (default: JAX's)."""
    backend = backend or jax.default_backend()
    if impl == "reference":
        return reference.paged_attention
    if impl == "cpu":  # its C++ decode kernel exists for CPU devices only
        return cpu_attention.paged_attention if backend == "cpu" else cpu_attention.paged_attention_jnp
    # the Pallas kernels are imported only when chosen: Pallas's TPU and GPU modules take a third of a second
    if impl == "pallas" and backend == "tpu":
        from lamps_jax.pallas_kernels.tpu import paged_attention as tpu_kernel

        return tpu_kernel.paged_attention
    if impl == "pallas" and backend in (*GPU_BACKENDS, "cpu"):
        from lamps_jax.pallas_kernels.gpu import paged_attention as gpu_kernel

        if backend == "cpu":
            return functools.partial(gpu_kernel.paged_attention, interpret=True, num_splits=1)
        return gpu_kernel.paged_attention
    raise ValueError(f"attention_impl {impl!r} is not available on backend {backend!r}")

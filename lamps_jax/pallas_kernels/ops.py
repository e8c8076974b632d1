"""Chooses the paged-attention implementation: ``auto``, ``reference`` or ``pallas``.

Every implementation has the signature of ``reference.paged_attention`` and reads the same KV
layout: per layer ``[K, P, S, H]`` K and V page arrays, page 0 the padding page, page tables
``[R, W]`` with W a multiple of the pages-per-block. ``auto`` picks the Pallas kernel of the
default backend (TPU or GPU) and the pure-jnp reference elsewhere (CPU).
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from lamps_jax.pallas_kernels import reference

ATTENTION_IMPLS = ("auto", "reference", "pallas")


def resolve_attention_impl(impl: str, backend: str | None = None) -> str:
    """``auto`` -> ``pallas`` on TPU/GPU, ``reference`` on CPU; other names pass through."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"unknown attention_impl {impl!r}; choose one of {ATTENTION_IMPLS}")
    if impl != "auto":
        return impl
    return "pallas" if (backend or jax.default_backend()) in ("tpu", "gpu", "cuda", "rocm") else "reference"


def paged_attention_fn(impl: str) -> Callable:
    """The paged-attention function for a resolved implementation name."""
    if impl == "reference":
        return reference.paged_attention
    raise ValueError(f"attention_impl {impl!r} is not available on backend {jax.default_backend()!r}")

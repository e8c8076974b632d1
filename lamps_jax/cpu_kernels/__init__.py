"""Hand-written CPU kernels for what XLA's CPU backend does slowly, called from jitted code through XLA's FFI.

Each kernel is a C++ source in this folder, compiled for the host CPU on first use (``build.py``) and
kept in the disk cache. Where no compiler is found or the build fails, callers keep XLA's own path.

- ``INT8_MATMUL`` (``int8_matmul.cc``): float32 activations against int8 weights, converted in registers
  (``model/packed_int8.py``);
- ``PAGED_ATTENTION`` (``paged_attention.cc``): decode rows' and prefill chunks' attention over their KV
  pages read in place (``pallas_kernels/cpu_attention.py``).

A CPU runner builds them all before it compiles (``ensure_built``), and ``in_use`` is part of every stored
executable's key: a step compiled with a kernel is never loaded where the kernel is off.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from lamps_jax.cpu_kernels.build import DISABLE_ENV, kernel_status


class Kernel(NamedTuple):
    source: str  # <source>.cc in this folder
    symbol: str  # its FFI handler
    target: str  # the name XLA calls it by


INT8_MATMUL = Kernel("int8_matmul", "LampsInt8Matmul", "lamps_int8_matmul")
PAGED_ATTENTION = Kernel("paged_attention", "LampsPagedAttention", "lamps_paged_attention")
KERNELS = (INT8_MATMUL, PAGED_ATTENTION)


def unavailable(kernel: Kernel) -> str | None:
    """None when ``kernel`` is built and registered, else why not (then its callers take XLA's path)."""
    return kernel_status(*kernel)


def ensure_built() -> None:
    """Builds (or finds) every kernel, the builds side by side (each is a few seconds of one core)."""
    with ThreadPoolExecutor(len(KERNELS)) as pool:
        list(pool.map(unavailable, KERNELS))


def in_use() -> str:
    """The kernels ready to call now, as a key part."""
    return ",".join(kernel.target for kernel in KERNELS if unavailable(kernel) is None)


__all__ = ["DISABLE_ENV", "INT8_MATMUL", "KERNELS", "PAGED_ATTENTION", "Kernel", "ensure_built", "in_use"]

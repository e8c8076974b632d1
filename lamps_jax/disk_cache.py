"""Where lamps_jax keeps what makes a second start fast: ``LAMPS_JAX_CACHE_DIR`` (default ``~/.cache/lamps_jax``;
set it to ``""`` to keep nothing).

- ``executables/``: compiled serving steps (``executable_store.py``);
- ``models/``: GGUF models converted to the engine's params layout (``model/converted_cache.py``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

DEFAULT_CACHE_ROOT = Path.home() / ".cache" / "lamps_jax"


def cache_root() -> Path | None:
    """The cache's root folder; None when ``LAMPS_JAX_CACHE_DIR`` is set empty."""
    root = os.environ.get("LAMPS_JAX_CACHE_DIR", str(DEFAULT_CACHE_ROOT))
    return Path(root) if root else None


@functools.cache
def cpu_flags() -> str:
    """The host CPU's instruction-set flags (Linux), which XLA's CPU code and the CPU kernels are compiled for."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line for line in lines if line.startswith("flags")), "")

"""The persistent XLA compilation cache: compiled serving steps stay on disk between runs, so a warm start reads
its executables instead of compiling them.

``enable_compilation_cache()`` turns it on in ``LAMPS_JAX_CACHE_DIR`` (default ``~/.cache/lamps_jax/xla``; an empty
value turns it off), unless the process has chosen a cache directory of its own already: a JAX codebase that
embeds the engine keeps its setting. Every ``JaxRunner`` calls it (``EngineConfig.compilation_cache``), so the
CLI, the benchmarks, the tests and library users all start warm the second time.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "lamps_jax" / "xla"


def enable_compilation_cache() -> str | None:
    """Turns the cache on; returns its directory (None: off, by ``LAMPS_JAX_CACHE_DIR=""``)."""
    chosen = jax.config.jax_compilation_cache_dir
    if chosen:
        return chosen
    cache_dir = os.environ.get("LAMPS_JAX_CACHE_DIR", str(DEFAULT_CACHE_DIR))
    if not cache_dir:
        return None
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # every serving shape is worth keeping
    return cache_dir

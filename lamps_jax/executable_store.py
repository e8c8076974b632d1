"""Compiled serving steps kept on disk and loaded without tracing or lowering: the warm start.

A serving step's executable is serialized (``jax.experimental.serialize_executable``) under a key naming
everything it depends on: the source of the lamps_jax package, the jax and jaxlib versions, ``XLA_FLAGS``, the
device (platform, kind, platform version and, on a CPU, the instruction-set flags the code was compiled for), the
static arguments (model config, kernel, mesh) and the shape, dtype and sharding of every argument. A key that
matches loads in a fraction of a second, where tracing and lowering a decoder unrolled layer by layer takes seconds
per shape under the GIL (JAX's persistent compilation cache skips only XLA's compile). Any change gives a new key,
and the step compiles as before. A file that does not load (truncated, written by another jaxlib) is compiled over.
Files sit in one folder per source fingerprint; only the ``KEEP_VERSIONS`` most recently written folders are kept.

The store is the ``executables`` folder of the disk cache (``disk_cache.py``; ``LAMPS_JAX_CACHE_DIR=""`` turns
it off). It replaces JAX's persistent compilation cache rather than sitting on it: an executable that JAX read from
its cache serializes without its machine code on CPU (jax 0.10; it fails with "Function ... not found" once
loaded), so the store is off in a process that has turned JAX's cache on itself (a codebase embedding the engine
keeps its own setting), and in multi-process runs, whose executables are bound to the processes that compiled them.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import shutil
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import jax
import jaxlib
from jax.experimental import serialize_executable

from lamps_jax import cpu_kernels
from lamps_jax.disk_cache import cache_root, cpu_flags

PACKAGE_DIR = Path(__file__).resolve().parent
KEEP_VERSIONS = 2  # source versions whose executables stay on disk (the current one and the one before)


@functools.cache
def source_fingerprint() -> str:
    """A hash of every Python and C++ file of the package: any code change makes every key new."""
    digest = hashlib.sha256()
    for path in sorted(p for pattern in ("*.py", "*.cc", "*.h") for p in PACKAGE_DIR.rglob(pattern)):
        digest.update(str(path.relative_to(PACKAGE_DIR)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _leaf_signature(leaf: Any) -> str:
    sharding = getattr(leaf, "sharding", None)
    return f"{getattr(leaf, 'shape', ())}:{getattr(leaf, 'dtype', type(leaf).__name__)}:{sharding}"


class ExecutableStore:
    """Serialized executables in one directory, one file per key; counts what it loaded and wrote (loads and saves
    run on several threads)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.loaded = 0
        self.saved = 0
        self._counting = threading.Lock()

    def key(self, name: str, args: tuple, static: dict[str, Any]) -> str:
        """The key of ``name`` compiled for ``args`` (arrays, ShapeDtypeStructs or pytrees of them) and ``static``."""
        device = jax.devices()[0]
        leaves, treedef = jax.tree.flatten(args)
        parts = [
            name,
            source_fingerprint(),
            jax.__version__,
            jaxlib.__version__,
            os.environ.get("XLA_FLAGS", ""),
            device.platform,
            device.device_kind,
            getattr(device.client, "platform_version", ""),
            cpu_flags() if device.platform == "cpu" else "",
            cpu_kernels.in_use() if device.platform == "cpu" else "",
            repr(sorted(static.items())),
            str(treedef),
            *map(_leaf_signature, leaves),
        ]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    @property
    def version_dir(self) -> Path:
        """This source version's folder."""
        return self.directory / source_fingerprint()[:16]

    def _path(self, key: str) -> Path:
        return self.version_dir / f"{key}.bin"

    def load(self, key: str) -> jax.stages.Compiled | None:
        """The executable stored under ``key``; None when there is none or it does not load."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            payload, in_tree, out_tree = pickle.loads(path.read_bytes())
            compiled = serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
        except Exception:  # any unreadable file is recompiled and overwritten
            return None
        with self._counting:
            self.loaded += 1
        return compiled

    def save(self, key: str, compiled: jax.stages.Compiled) -> None:
        """Writes ``compiled`` under ``key`` (atomically: a concurrent reader sees the old file or the new one); one
        that XLA cannot serialize is left out with a warning."""
        try:
            blob = pickle.dumps(serialize_executable.serialize(compiled))
        except Exception as error:  # an executable XLA cannot serialize runs, unstored
            warnings.warn(f"compiled step not stored (it recompiles next time): {error}", stacklevel=2)
            return
        self.version_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.version_dir, delete=False, suffix=".tmp") as tmp:
            tmp.write(blob)
        os.replace(tmp.name, self._path(key))
        with self._counting:
            self.saved += 1
        self._drop_old_versions()

    def _drop_old_versions(self) -> None:
        """Removes the folders of all but the ``KEEP_VERSIONS`` most recently written source versions."""
        versions = sorted((d for d in self.directory.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime)
        for old in versions[:-KEEP_VERSIONS]:
            if old != self.version_dir:
                shutil.rmtree(old, ignore_errors=True)


def default_store() -> ExecutableStore | None:
    """The store in the disk cache; None when the cache is off, when JAX's own persistent cache is on in this
    process, or in a multi-process run."""
    root = cache_root()
    if root is None or jax.config.jax_compilation_cache_dir or jax.process_count() > 1:
        return None
    return ExecutableStore(root / "executables")

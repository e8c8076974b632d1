"""Compiles a kernel source of this folder for the host CPU and registers its FFI handler with XLA.

The shared library is built with the system C++ compiler (``CXX``, else ``c++``/``g++``) against the
XLA FFI headers jaxlib ships (``jax.ffi.include_dir()``), ``-O3 -march=native``, and kept in
``<cache>/kernels/`` (``disk_cache.py``) under a hash of the source, the compiler, jaxlib's version and the
host CPU's flags, so a second process loads it at once. ``LAMPS_JAX_CPU_KERNELS=0`` turns every kernel off
(callers then take XLA's path, as they do when the build fails); ``kernel_status`` says which and why.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jaxlib

from lamps_jax.disk_cache import cache_root, cpu_flags

SOURCE_DIR = Path(__file__).parent
DISABLE_ENV = "LAMPS_JAX_CPU_KERNELS"
BUILD_TIMEOUT_S = 300


class KernelUnavailable(RuntimeError):
    """A kernel cannot be used here; the message says why (no compiler, a failed build, turned off)."""


def _compiler() -> str:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    raise KernelUnavailable("no C++ compiler found (set CXX, or install g++)")


def _compiler_version(compiler: str) -> str:
    out = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout.splitlines()[0] if out.stdout else compiler


def _flags(include_dir: str) -> list[str]:
    arch = ["-march=native"] if platform.machine() in ("x86_64", "AMD64") else ["-mcpu=native"]
    return ["-O3", *arch, "-std=c++17", "-shared", "-fPIC", "-w", f"-I{include_dir}", f"-I{SOURCE_DIR}"]


def _library_path(name: str, compiler: str, flags: list[str]) -> Path:
    source = b"".join(path.read_bytes() for path in [SOURCE_DIR / f"{name}.cc", *sorted(SOURCE_DIR.glob("*.h"))])
    key = hashlib.sha256(
        b"\0".join(
            [
                source,
                _compiler_version(compiler).encode(),
                " ".join(flags).encode(),
                jaxlib.__version__.encode(),
                cpu_flags().encode(),
            ]
        )
    ).hexdigest()[:16]
    root = cache_root()
    folder = root / "kernels" if root else Path(tempfile.gettempdir()) / f"lamps_jax_kernels_{os.getuid()}"
    return folder / f"{name}-{key}.so"


def _build(name: str, compiler: str, flags: list[str], target: Path) -> None:
    """Compiles into a temporary file beside ``target``, then renames it: concurrent builds never see half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".so.tmp", delete=False) as tmp:
        partial = Path(tmp.name)
    try:
        cmd = [compiler, *flags, str(SOURCE_DIR / f"{name}.cc"), "-o", str(partial)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        if out.returncode != 0:
            raise KernelUnavailable(f"building {name}.cc failed ({' '.join(cmd)}):\n{out.stderr[-2000:]}")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _load(name: str, symbol: str, target_name: str) -> None:
    compiler = _compiler()
    flags = _flags(jax.ffi.include_dir())
    library = _library_path(name, compiler, flags)
    if not library.exists():
        _build(name, compiler, flags, library)
    handler = getattr(ctypes.cdll.LoadLibrary(str(library)), symbol)
    jax.ffi.register_ffi_target(target_name, jax.ffi.pycapsule(handler), platform="cpu")


@functools.cache
def _built(name: str, symbol: str, target_name: str) -> str | None:
    try:
        _load(name, symbol, target_name)
    # AttributeError: the library lacks the handler's symbol
    except (KernelUnavailable, OSError, AttributeError, subprocess.SubprocessError) as error:
        return str(error)
    return None


def kernel_status(name: str, symbol: str, target_name: str) -> str | None:
    """Builds (or finds) ``name.cc``'s library and registers its handler ``symbol`` as the CPU FFI target
    ``target_name``, once per process. None when the kernel is ready to call, else why it is not."""
    if os.environ.get(DISABLE_ENV, "1") == "0":
        return f"turned off ({DISABLE_ENV}=0)"
    return _built(name, symbol, target_name)

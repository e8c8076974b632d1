"""Hand-written CPU kernels for what XLA's CPU backend does slowly, called from jitted code through XLA's FFI.

Each kernel is a C++ source in this folder, compiled for the host CPU on first use (``build.py``) and
kept in the disk cache. Where no compiler is found or the build fails, callers keep XLA's own path.
"""

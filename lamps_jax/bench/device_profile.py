"""Device profiles: a calibrated cost model together with the device, model and settings it was measured on.

``calibrate`` writes two files side by side: ``<stem>.json``, the cost model itself (what ``load_cost_model``,
``bench --profile`` and the scheduler's ``cost_profile`` read), and ``<stem>.report.json``, the device profile:
the device's identity (``device_identity``), the model, dtype, KV budget, the measured roofline fractions, the
raw fits and points, and a copy of the cost model. ``resolve_profile`` turns a built-in name, a cost model file
or a device profile file into the cost model source the simulator loads plus the identity, when there is one.
``measure_device_peaks`` times a large read and a large matmul with JAX on the default device.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lamps_jax.scheduler.cost_model import PROFILES, CostModel

if TYPE_CHECKING:  # JAX loads only to measure: resolving a profile on the command line does not need it
    import jax

PROFILE_SUFFIX = ".json"
DEVICE_PROFILE_SUFFIX = ".report.json"
PEAK_READ_BYTES = 256 * 2**20
PEAK_MATMUL_SIZE = 2048


def device_slug(device: jax.Device) -> str:
    """A file-name word for a device: ``cpu`` on the CPU, else its kind (``nvidia-h100-80gb-hbm3``, ``tpu-v5-lite``)."""
    if device.platform == "cpu":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", device.device_kind.lower()).strip("-") or device.platform


def device_identity(device: jax.Device, memory_bytes: int | None) -> dict:
    """What the profile was measured on: the accelerator, the software and the host (with its load then)."""
    import jax

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "platform": device.platform,
        "device_kind": device.device_kind,
        "num_devices": jax.device_count(),
        "memory_bytes": memory_bytes,
        "jax_version": jax.__version__,
        "jaxlib_version": importlib.metadata.version("jaxlib"),
        "python_version": platform.python_version(),
        "host_cpus": os.cpu_count(),
        "host_processor": platform.processor() or platform.machine(),
        "load_average_1min": load,
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


@dataclass(frozen=True)
class DevicePeaks:
    """What JAX reaches on the default device: reading memory (bytes/s) and a square matmul (FLOP/s)."""

    bandwidth: float
    flops: float
    dtype: str


def _best_seconds(fn, repeats: int = 5) -> float:
    import jax

    jax.block_until_ready(fn())  # compiles
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best


def measure_device_peaks(dtype: str = "float32") -> DevicePeaks:
    """Best of five: a ``PEAK_READ_BYTES`` f32 reduction (bandwidth) and a ``PEAK_MATMUL_SIZE``² matmul in
    ``dtype`` (arithmetic), jitted on the default device."""
    import jax
    import jax.numpy as jnp

    data = jnp.ones(PEAK_READ_BYTES // 4, jnp.float32)
    read = _best_seconds(lambda: jax.jit(jnp.sum)(data))
    a = jnp.ones((PEAK_MATMUL_SIZE, PEAK_MATMUL_SIZE), jnp.dtype(dtype))
    matmul = _best_seconds(lambda: jax.jit(jnp.matmul)(a, a))
    return DevicePeaks(bandwidth=PEAK_READ_BYTES / read, flops=2 * PEAK_MATMUL_SIZE**3 / matmul, dtype=dtype)


def profile_paths(output: Path, stem: str) -> tuple[Path, Path]:
    """(cost model file, device profile file): ``output`` itself when it names a ``.json`` file, else
    ``<output>/<stem>.json``; the device profile beside it as ``.report.json``."""
    profile = output if output.suffix == PROFILE_SUFFIX else output / f"{stem}{PROFILE_SUFFIX}"
    if profile.name.endswith(DEVICE_PROFILE_SUFFIX):
        raise ValueError(f"{profile} names a device profile (*{DEVICE_PROFILE_SUFFIX}): give the cost model's file")
    return profile, profile.with_name(profile.name.removesuffix(PROFILE_SUFFIX) + DEVICE_PROFILE_SUFFIX)


@dataclass(frozen=True)
class ResolvedProfile:
    """A profile given on the command line, ready for the simulator."""

    label: str  # the built-in name or the file's stem
    source: str  # what ``load_cost_model`` reads: a built-in name or a cost model file
    cost: CostModel
    device: dict | None  # ``device_identity`` of a calibrated profile; None for a built-in one
    details: dict | None  # the device profile (model, dtype, KV budget, roofline); None without one


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def _device_profile(path: Path) -> dict | None:
    data = _read_json(path) if path.is_file() else None
    return data if isinstance(data, dict) and isinstance(data.get("device"), dict) else None


def resolve_profile(name_or_path: str) -> ResolvedProfile:
    """A built-in profile name, a cost model file (``<stem>.json``, its ``.report.json`` read when beside it) or a
    device profile (``<stem>.report.json``, whose cost model file must sit beside it and match its copy)."""
    if name_or_path in PROFILES:
        return ResolvedProfile(name_or_path, name_or_path, PROFILES[name_or_path], None, None)
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise ValueError(
            f"unknown profile {name_or_path!r}: expected one of {', '.join(PROFILES)}, a cost model JSON file or a "
            f"device profile (*{DEVICE_PROFILE_SUFFIX}) written by lamps-jax calibrate"
        )
    if path.name.endswith(DEVICE_PROFILE_SUFFIX):
        details = _device_profile(path)
        if details is None or "cost_model" not in details:
            raise ValueError(f"{path} is not a device profile written by lamps-jax calibrate (no device, cost_model)")
        source = path.with_name(path.name.removesuffix(DEVICE_PROFILE_SUFFIX) + PROFILE_SUFFIX)
        if not source.is_file():
            raise ValueError(f"the device profile {path} needs its cost model file beside it: {source} is missing")
        cost = CostModel.load(source)
        if cost.to_dict() != details["cost_model"]:
            raise ValueError(f"{source} differs from the cost model recorded in {path}: calibrate again")
    else:
        source, cost = path, CostModel.load(path)
        details = _device_profile(path.with_name(path.stem + DEVICE_PROFILE_SUFFIX))
    label = source.name.removesuffix(PROFILE_SUFFIX)
    return ResolvedProfile(label, str(source), cost, details["device"] if details else None, details)

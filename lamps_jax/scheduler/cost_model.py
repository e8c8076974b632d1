"""Device cost model: how long an engine iteration and a KV swap take, in seconds (pure Python).

``CostModel`` holds the calibrated constants of f (iteration time from new and cached tokens) and
g (one-way swap time from tokens copied); the waste equations and the LAMPS score read them.
Built-in ``PROFILES`` reproduce the papers' GPU setups; ``calibrate`` (lamps_jax.bench) measures this
device and writes the same JSON that ``load_cost_model`` reads. ``fit_linear`` and ``fit_plane``
are the least-squares fits behind a calibration.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_GB = 1e9  # the papers state memory and bandwidth in decimal GB


@dataclass(frozen=True)
class CostModel:
    """Iteration time f = a·new_tokens + b·context_tokens + c (seconds); swap time g(t) = a_s·t + b_s one way.

    ``new_tokens`` are the tokens an iteration computes (prefill chunks + one per decode);
    ``context_tokens`` are the tokens already cached that those rows attend over (the sum of the
    scheduled chunks' computed tokens).
    """

    name: str
    iter_per_token: float  # a: seconds per token processed in the iteration
    iter_per_context_token: float  # b: seconds per KV token read (decode is memory-bound); 0 in the papers' profiles
    iter_base: float  # c: seconds per iteration
    swap_per_token: float  # a_s: seconds per token of KV copied one way
    swap_base: float  # b_s: seconds per swap, one way
    token_budget: int  # B, tokens per iteration (the saturation point)
    swap_budget_tokens: int | None  # swap budget's constant part, tokens per iteration; None = unlimited
    kv_bytes_per_token: int
    kv_capacity_tokens: int | None = None  # KV memory of the profiled setup, in tokens, when known

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a cost model needs a name")
        for field in ("iter_per_token", "iter_per_context_token", "iter_base", "swap_per_token", "swap_base"):
            value = getattr(self, field)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"CostModel.{field} must be a finite number >= 0, got {value}")
        for field in ("token_budget", "kv_bytes_per_token"):
            if getattr(self, field) < 1:
                raise ValueError(f"CostModel.{field} must be >= 1, got {getattr(self, field)}")
        if self.swap_budget_tokens is not None and self.swap_budget_tokens < 0:
            raise ValueError(f"CostModel.swap_budget_tokens must be >= 0 or None, got {self.swap_budget_tokens}")
        if self.kv_capacity_tokens is not None and self.kv_capacity_tokens < 1:
            raise ValueError(f"CostModel.kv_capacity_tokens must be >= 1 or None, got {self.kv_capacity_tokens}")

    def iteration_time(self, num_tokens: int, context_tokens: int = 0) -> float:
        """f: seconds of one iteration computing ``num_tokens`` over ``context_tokens`` cached ones."""
        if num_tokens < 0 or context_tokens < 0:
            raise ValueError(f"token counts must be >= 0, got {num_tokens} new and {context_tokens} cached")
        return self.iter_per_token * num_tokens + self.iter_per_context_token * context_tokens + self.iter_base

    def swap_time(self, num_tokens: int) -> float:
        """g: seconds to copy ``num_tokens`` of KV one way (device to host or back); 0 for none."""
        if num_tokens < 0:
            raise ValueError(f"token count must be >= 0, got {num_tokens}")
        return self.swap_per_token * num_tokens + self.swap_base if num_tokens else 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CostModel:
        """The inverse of ``to_dict``; a missing, unknown or mistyped field raises a ValueError naming it."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        missing = [n for n, f in fields.items() if n not in d and f.default is dataclasses.MISSING]
        if missing:
            raise ValueError(f"cost model is missing field(s): {', '.join(missing)}")
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ValueError(f"cost model has unknown field(s): {', '.join(unknown)}; known: {', '.join(fields)}")
        return cls(**{name: _parse_field(name, str(fields[name].type), value) for name, value in d.items()})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CostModel:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a JSON object of cost model fields")
        return cls.from_dict(data)


def _parse_field(name: str, annotation: str, value: Any) -> Any:
    """Checks one JSON value against its field's annotation ("float", "int", "int | None", "str")."""
    if value is None and "None" in annotation:
        return None
    kind = annotation.split(" | ")[0]
    if kind == "str" and isinstance(value, str):
        return value
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "float" and is_number:
        return float(value)
    if kind == "int" and is_number and float(value).is_integer():
        return int(value)
    raise ValueError(f"cost model field {name!r} must be {annotation}, got {value!r}")


A100_40GB_HBM_BYTES_PER_S = 1555 * _GB


def _gptj_6b_a100(
    name: str, per_token_ms: float, base_ms: float, swap_budget_tokens: int | None, reads_context: bool = False
) -> CostModel:
    """GPT-J-6B in fp16 on one A100 40 GB; the iteration constants differ between the two papers.

    ``reads_context`` adds the memory-bound attention term the papers' profiles leave out: every cached
    token a row attends over is read once from HBM per iteration (its K and V in every layer).
    """
    kv_bytes = 28 * 2 * 4096 * 2  # layers x (K, V) x hidden x fp16 bytes = 458752
    return CostModel(
        name=name,
        iter_per_token=per_token_ms * 1e-3,
        iter_per_context_token=kv_bytes / A100_40GB_HBM_BYTES_PER_S if reads_context else 0.0,
        iter_base=base_ms * 1e-3,
        swap_per_token=kv_bytes / (25 * _GB),  # PCIe 4.0 x16 at ~25 GB/s effective
        swap_base=0.0,  # the papers give no fixed per-swap cost
        token_budget=384,
        swap_budget_tokens=swap_budget_tokens,
        kv_bytes_per_token=kv_bytes,
        kv_capacity_tokens=int((40 * _GB - 12.1 * _GB) // kv_bytes),  # 40 GB card minus 12.1 GB of fp16 weights
    )


def _vicuna_13b_2xa100() -> CostModel:
    """Vicuna-13B in fp16 over two A100 40 GB (tensor parallel): KV and swap bandwidth are split over both."""
    kv_bytes = 40 * 2 * 5120 * 2  # layers x (K, V) x hidden x fp16 bytes = 819200
    return CostModel(
        name="vicuna-13b-2xa100",
        iter_per_token=0.0279e-3,
        iter_per_context_token=0.0,
        iter_base=15.4e-3,
        swap_per_token=kv_bytes / (2 * 25 * _GB),  # each GPU copies its half over its own PCIe 4.0 x16 link
        swap_base=0.0,  # the papers give no fixed per-swap cost
        token_budget=384,
        swap_budget_tokens=111,
        kv_bytes_per_token=kv_bytes,
        kv_capacity_tokens=int((2 * 40 * _GB - 26 * _GB) // kv_bytes),  # two 40 GB cards minus 26 GB of weights
    )


# Llama-3.1-8B in bf16 on one H100 80 GB SXM, derived from the roofline (no measurement behind it).
LLAMA31_8B_PARAMETERS = 8_030_261_248  # 2 x 128256 x 4096 (embeddings, untied head) + 32 layers x 218,112,000 + 4096
LLAMA31_8B_WEIGHT_BYTES = 2 * LLAMA31_8B_PARAMETERS  # bf16: 16,060,522,496 B = 16.06 GB
LLAMA31_8B_KV_BYTES_PER_TOKEN = 2 * 32 * 8 * 128 * 2  # (K, V) x layers x KV heads x head dim x bf16 bytes = 131072
H100_SXM_HBM_BYTES_PER_S = 3.35e12  # HBM3, NVIDIA's datasheet figure for the SXM card
H100_SXM_BF16_FLOPS = 989e12  # dense bf16 tensor-core peak (the datasheet's 1,979 TFLOP/s assumes 2:4 sparsity)
H100_SXM_MEMORY_BYTES = 80 * _GB  # the card's 80 GB read as decimal GB, as the A100 profiles read 40 GB
H100_PREFILL_MFU = 0.5  # assumed share of the bf16 peak a prefill-sized matmul sustains in a serving engine
H100_STEP_OVERHEAD_S = 1e-3  # assumed fixed cost of a step beyond the weight read: launches, scheduling, sampling
H100_GPU_MEMORY_UTILIZATION = 0.9  # vLLM's gpu_memory_utilization default: the share of the card an engine takes
H100_ACTIVATION_RESERVE_BYTES = 2 * _GB  # assumed: peak activations of an 8192-token step, CUDA graphs, allocator slack
PCIE5_X16_BYTES_PER_S = 55 * _GB  # PCIe Gen5 x16: 64 GB/s raw per direction, ~55 GB/s effective pinned-memory copies
H100_SWAP_BASE_S = 50e-6  # assumed fixed cost of one swap: launching its copies and synchronising with them
VLLM_H100_TOKEN_BUDGET = 8192  # vLLM's max_num_batched_tokens default for its API server on GPUs of >= 70 GiB


def _llama31_8b_h100() -> CostModel:
    """Llama-3.1-8B (bf16) on one H100 80 GB SXM: the agent-scale setup of the later papers, from the roofline.

    Every constant is a module-level name above; the arithmetic, with the values it gives:

    - ``iter_base`` c = one read of every weight per step at the HBM bandwidth (16.06 GB / 3.35 TB/s = 4.794 ms)
      plus ``H100_STEP_OVERHEAD_S`` (1 ms, assumed) = 5.794 ms: an unloaded decode step.
    - ``iter_per_context_token`` b = the K and V of one cached token read once per step at the HBM bandwidth
      (131072 B / 3.35 TB/s = 0.0391 us): decode attention is memory-bound.
    - ``iter_per_token`` a = 2 x parameters FLOPs per new token at the bf16 peak times an assumed MFU of 0.5
      (16.06 GFLOP / 494.5 TFLOP/s = 32.48 us). Attention's own FLOPs (4 x layers x heads x head dim x context
      per token) are left out, as the roofline module leaves them out.
    - ``token_budget`` B = 8192, vLLM's default ``max_num_batched_tokens`` for its OpenAI server on GPUs of
      >= 70 GiB other than the A100 (vllm/engine/arg_utils.py, ``EngineArgs.get_batch_defaults``): the engine the
      later papers' baselines run. The roofline's saturation point, where a step's compute time equals its weight
      read (4.794 ms / 32.48 us = 148 tokens), is not used as B: f already charges each token its compute, so the
      budget only caps a step, and a 148-token cap would split a 30,000-token agent context into ~200 prefill
      steps that each pay c again, which no engine the papers measure does.
    - ``swap_per_token`` a_s = 131072 B over PCIe Gen5 x16 at ~55 GB/s effective = 2.383 us;
      ``swap_base`` b_s = 50 us (assumed). Swaps are not budgeted (``swap_budget_tokens`` None, as the LAMPS
      profile): the scheduler's ``swap_budget`` mode sets the per-step limit.
    - ``kv_capacity_tokens`` = (0.9 x 80 GB - 16.06 GB of weights - 2 GB activation reserve) / 131072 B
      = 411,525 tokens. ``sim.capacity.kv_capacity_tokens`` sizes memory the same way without the reserve.
    """
    kv_bytes = LLAMA31_8B_KV_BYTES_PER_TOKEN
    weight_read = LLAMA31_8B_WEIGHT_BYTES / H100_SXM_HBM_BYTES_PER_S
    kv_memory = H100_GPU_MEMORY_UTILIZATION * H100_SXM_MEMORY_BYTES - LLAMA31_8B_WEIGHT_BYTES
    return CostModel(
        name="llama31-8b-h100",
        iter_per_token=2 * LLAMA31_8B_PARAMETERS / (H100_SXM_BF16_FLOPS * H100_PREFILL_MFU),
        iter_per_context_token=kv_bytes / H100_SXM_HBM_BYTES_PER_S,
        iter_base=weight_read + H100_STEP_OVERHEAD_S,
        swap_per_token=kv_bytes / PCIE5_X16_BYTES_PER_S,
        swap_base=H100_SWAP_BASE_S,
        token_budget=VLLM_H100_TOKEN_BUDGET,
        swap_budget_tokens=None,
        kv_bytes_per_token=kv_bytes,
        kv_capacity_tokens=int((kv_memory - H100_ACTIVATION_RESERVE_BYTES) // kv_bytes),
    )


PROFILES: dict[str, CostModel] = {
    # INFERCEPT's profile: f(t) = 0.0463 ms·t + 10 ms; 0.00462·B + 108.99 = 111 tokens at B = 384 is the constant
    # part of its per-iteration swap budget (the scheduler's swap_budget="infercept" adds the free-memory terms).
    "gptj-6b-a100": _gptj_6b_a100("gptj-6b-a100", 0.0463, 10.0, 111),
    # LAMPS's profile of the same setup: f(t) = 0.0408 ms·t + 16.92 ms, swaps not budgeted.
    "gptj-6b-a100-lamps": _gptj_6b_a100("gptj-6b-a100-lamps", 0.0408, 16.92, None),
    # INFERCEPT's profile plus the KV read of attention at the A100's 1,555 GB/s (0.295 us per cached token).
    "gptj-6b-a100-ctx": _gptj_6b_a100("gptj-6b-a100-ctx", 0.0463, 10.0, 111, reads_context=True),
    "vicuna-13b-2xa100": _vicuna_13b_2xa100(),
    # The agent-scale setup (Continuum's Llama-3.1-8B) on an H100, from the roofline: f(t, ctx) = 32.48 us·t
    # + 0.0391 us·ctx + 5.794 ms, B = 8192, 411,525 KV tokens, swaps at 55 GB/s + 50 us.
    "llama31-8b-h100": _llama31_8b_h100(),
}


def load_cost_model(name_or_path: str) -> CostModel:
    """A built-in profile by name, or a cost model JSON file (as written by ``CostModel.save``)."""
    if name_or_path in PROFILES:
        return PROFILES[name_or_path]
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return CostModel.load(path)
    raise ValueError(
        f"unknown cost model {name_or_path!r}: expected one of {', '.join(PROFILES)} or a cost model JSON file"
    )


def _r_squared(ys: Sequence[float], predicted: Sequence[float]) -> float:
    """Coefficient of determination; 1.0 for a perfect fit of constant data."""
    mean = statistics.fmean(ys)
    ss_res = sum((y - p) ** 2 for y, p in zip(ys, predicted))
    ss_tot = sum((y - mean) ** 2 for y in ys)
    if ss_tot == 0:
        return 1.0 if ss_res == 0 else 0.0
    return 1.0 - ss_res / ss_tot


def fit_linear(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares y = slope·x + intercept; returns (slope, intercept, r2)."""
    if len(xs) != len(ys):
        raise ValueError(f"fit_linear needs as many xs as ys, got {len(xs)} and {len(ys)}")
    if len(xs) < 2:
        raise ValueError(f"fit_linear needs at least 2 points, got {len(xs)}")
    if len(set(xs)) < 2:
        raise ValueError("fit_linear needs at least 2 distinct x values")
    slope, intercept = statistics.linear_regression(xs, ys)
    return slope, intercept, _r_squared(ys, [slope * x + intercept for x in xs])


def fit_plane(rows: Sequence[tuple[float, float, float]]) -> tuple[float, float, float, float]:
    """Least-squares f = a·x + b·y + c over (x, y, f) rows; returns (a, b, c, r2)."""
    if len(rows) < 3:
        raise ValueError(f"fit_plane needs at least 3 points, got {len(rows)}")
    data = np.asarray(rows, dtype=np.float64)
    design = np.column_stack([data[:, 0], data[:, 1], np.ones(len(data))])
    coeffs, _, rank, _ = np.linalg.lstsq(design, data[:, 2], rcond=None)
    if rank < 3:
        raise ValueError("fit_plane needs points that span a plane: vary x and y independently")
    a, b, c = (float(v) for v in coeffs)
    return a, b, c, _r_squared(data[:, 2].tolist(), (design @ coeffs).tolist())

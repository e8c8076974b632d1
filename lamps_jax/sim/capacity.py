"""KV memory of a simulated accelerator: what is left of its memory once a model's weights are in it.

``kv_capacity_tokens`` derives the KV capacity a simulated engine gets from a Llama-family model
config and a device memory size, the way a serving engine sizes its page pool: a share of the device
memory (``utilization``, vLLM's ``gpu_memory_utilization``) minus the weights, divided by the bytes
of K and V one token holds over all layers.

Under tensor parallelism over N devices (``tensor_parallel``) the memory and utilization are per device,
and both the weights and the KV are what one device holds under ``model/sharding.py``'s rules: column- and
row-split projections at 1/N (kv-head columns repeated up to N when the model has fewer kv heads), the
embedding and LM head at 1/N of the vocabulary when N divides it (else whole), norms whole; KV pages hold
max(K / N, 1) kv heads per device. A token's KV is split over the devices, so the tokens one device has room
for are the capacity of the whole model.
"""

from __future__ import annotations

import json
from pathlib import Path

from lamps_jax.config import PRESETS, ModelConfig


def num_parameters(model: ModelConfig) -> int:
    """Parameters of a Llama-family decoder: embeddings, attention, SwiGLU MLP, RMSNorms, LM head."""
    h, kv_width = model.hidden_size, model.num_kv_heads * model.head_dim
    q_width = model.num_heads * model.head_dim
    attention = h * q_width + 2 * h * kv_width + q_width * h
    if model.attention_bias:
        attention += q_width + 2 * kv_width
    per_layer = attention + 3 * h * model.intermediate_size + 2 * h
    embeddings = model.vocab_size * h * (1 if model.tie_word_embeddings else 2)
    return embeddings + model.num_layers * per_layer + h


def parameters_per_device(model: ModelConfig, tensor_parallel: int = 1) -> int:
    """Parameters one device holds when the model is split ``tensor_parallel`` ways (``model/sharding.py``);
    ``num_parameters`` for one device."""
    tp = tensor_parallel
    h = model.hidden_size
    q_width = model.num_heads * model.head_dim
    qkv_width = q_width + 2 * model.kv_heads_per_device(tp) * tp * model.head_dim  # kv heads repeated up to tp
    split = h * qkv_width + q_width * h + 3 * h * model.intermediate_size
    if model.attention_bias:
        split += qkv_width
    tables = model.vocab_size * h * (1 if model.tie_word_embeddings else 2)
    tables_per_device = tables // tp if model.vocab_size % tp == 0 else tables
    return tables_per_device + model.num_layers * (split // tp + 2 * h) + h


def kv_capacity_tokens(
    model: ModelConfig, device_memory_bytes: float, utilization: float = 0.9, tensor_parallel: int = 1
) -> int:
    """KV tokens the model's engine has room for on ``tensor_parallel`` devices of ``device_memory_bytes`` each."""
    if not 0 < utilization <= 1:
        raise ValueError(f"utilization must be in (0, 1], got {utilization}")
    model.check_tensor_parallel(tensor_parallel)
    itemsize = 4 if model.dtype == "float32" else 2
    weights = parameters_per_device(model, tensor_parallel) * itemsize
    free = device_memory_bytes * utilization - weights
    bytes_per_token = model.kv_bytes_per_token_per_device(tensor_parallel)
    if free < bytes_per_token:
        raise ValueError(
            f"the model's weights ({weights / 1e9:.2f} GB) leave no KV memory in {utilization:.0%} of "
            f"{device_memory_bytes / 1e9:.2f} GB"
        )
    return int(free // bytes_per_token)


def load_model_config(name_or_path: str, dtype: str = "bfloat16") -> ModelConfig:
    """A preset name (``tiny``) or a Hugging Face ``config.json`` (or the folder holding one)."""
    if name_or_path in PRESETS:
        return PRESETS[name_or_path].replace(dtype=dtype)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{name_or_path} is neither a preset ({', '.join(PRESETS)}) nor a config.json")
    try:
        return ModelConfig.from_hf_dict(json.loads(path.read_text()), dtype=dtype)
    except (json.JSONDecodeError, KeyError) as err:
        raise ValueError(f"{path} is not a Hugging Face model config: {err}") from err

"""Params from and to Hugging Face tensor names; random init; local safetensors directories.

Everything funnels through ``params_from_hf_tensors``: a lookup from HF names
(``model.layers.3.self_attn.q_proj.weight``, PyTorch [out, in] layout) to float arrays, arranged
into the params pytree of ``lamps_jax.model.llama``: q/k/v and gate/up are concatenated there into
one matrix each (``fuse_layer``). The GGUF loader maps its names onto the same lookup, and
``save_hf_directory`` writes the inverse (used to hand the same weights to other engines).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lamps_jax.config import ModelConfig
from lamps_jax.model.llama import Params
from lamps_jax.model.quantize import dequantize
from lamps_jax.model.sources import ModelLoadError

# our per-layer name -> (HF suffix under model.layers.{i}., transpose to [in, out])
_LAYER_TENSORS = {
    "attn_norm": ("input_layernorm.weight", False),
    "wq": ("self_attn.q_proj.weight", True),
    "wk": ("self_attn.k_proj.weight", True),
    "wv": ("self_attn.v_proj.weight", True),
    "wo": ("self_attn.o_proj.weight", True),
    "mlp_norm": ("post_attention_layernorm.weight", False),
    "w_gate": ("mlp.gate_proj.weight", True),
    "w_up": ("mlp.up_proj.weight", True),
    "w_down": ("mlp.down_proj.weight", True),
}
_BIAS_TENSORS = {
    "bq": "self_attn.q_proj.bias",
    "bk": "self_attn.k_proj.bias",
    "bv": "self_attn.v_proj.bias",
}


def _layer_names(cfg: ModelConfig) -> dict[str, tuple[str, bool]]:
    names = dict(_LAYER_TENSORS)
    if cfg.attention_bias:
        names.update({ours: (hf, False) for ours, hf in _BIAS_TENSORS.items()})
    return names


def _expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    d, f, n, k = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads
    h = cfg.head_dim
    return {
        "attn_norm": (d,),
        "mlp_norm": (d,),
        "wq": (d, n * h),
        "wk": (d, k * h),
        "wv": (d, k * h),
        "wo": (n * h, d),
        "w_gate": (d, f),
        "w_up": (d, f),
        "w_down": (f, d),
        "bq": (n * h,),
        "bk": (k * h,),
        "bv": (k * h,),
    }


# fused name -> the separate projections concatenated along the output axis, in order
_FUSED = {
    "wqkv": ("wq", "wk", "wv"),
    "bqkv": ("bq", "bk", "bv"),
    "w_gate_up": ("w_gate", "w_up"),
}


def fuse_layer(layer: dict[str, Any]) -> dict[str, Any]:
    """Separate q/k/v (and bias) and gate/up projections -> one matrix each, concatenated on the output axis."""
    fused = {name: value for name, value in layer.items() if not any(name in parts for parts in _FUSED.values())}
    for name, parts in _FUSED.items():
        if parts[0] in layer:
            fused[name] = np.concatenate([np.asarray(layer[part]) for part in parts], axis=-1)
    return fused


def split_layer(layer: dict[str, Any], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """The inverse of ``fuse_layer`` (float32 numpy; int8 weights are dequantized)."""
    q, kv, f = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim, cfg.intermediate_size
    cuts = {"wqkv": [q, q + kv], "bqkv": [q, q + kv], "w_gate_up": [f]}
    out = {}
    for name, value in layer.items():
        arr = np.asarray(dequantize(value), np.float32)
        if name in _FUSED:
            out.update(zip(_FUSED[name], np.split(arr, cuts[name], axis=-1)))
        else:
            out[name] = arr
    return out


def params_from_hf_tensors(get: Callable[[str], np.ndarray], cfg: ModelConfig) -> Params:
    """Builds the params pytree from HF-named tensors, checking every shape."""
    dtype = jnp.dtype(cfg.dtype)
    shapes = _expected_shapes(cfg)

    def fetch(name: str, shape: tuple[int, ...], transpose: bool) -> np.ndarray:
        try:
            arr = np.asarray(get(name), dtype=np.float32)
        except KeyError:
            raise ModelLoadError(f"weight {name!r} is missing") from None
        if transpose:
            arr = arr.T
        if arr.shape != shape:
            raise ModelLoadError(f"weight {name!r} has shape {arr.shape}, expected {shape}")
        return arr

    def layer(i: int) -> dict[str, jax.Array]:
        separate = {
            ours: fetch(f"model.layers.{i}.{hf}", shapes[ours], t) for ours, (hf, t) in _layer_names(cfg).items()
        }
        return {name: jnp.asarray(arr, dtype) for name, arr in fuse_layer(separate).items()}

    params: Params = {
        "embed": jnp.asarray(fetch("model.embed_tokens.weight", (cfg.vocab_size, cfg.hidden_size), False), dtype),
        "final_norm": jnp.asarray(fetch("model.norm.weight", (cfg.hidden_size,), False), dtype),
        "layers": [layer(i) for i in range(cfg.num_layers)],
    }
    if not cfg.tie_word_embeddings:
        params["lm_head"] = jnp.asarray(fetch("lm_head.weight", (cfg.hidden_size, cfg.vocab_size), True), dtype)
    return params


def hf_tensors_from_params(params: Params, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """The inverse of ``params_from_hf_tensors`` (float32 numpy, PyTorch layout; int8 weights dequantized)."""
    out = {
        "model.embed_tokens.weight": np.asarray(dequantize(params["embed"]), np.float32),
        "model.norm.weight": np.asarray(params["final_norm"], np.float32),
    }
    if not cfg.tie_word_embeddings:
        out["lm_head.weight"] = np.ascontiguousarray(np.asarray(dequantize(params["lm_head"]), np.float32).T)
    for i, layer in enumerate(params["layers"]):
        separate = split_layer(layer, cfg)
        for ours, (hf, transpose) in _layer_names(cfg).items():
            out[f"model.layers.{i}.{hf}"] = np.ascontiguousarray(separate[ours].T if transpose else separate[ours])
    return out


def init_params(cfg: ModelConfig, seed: int = 0) -> Params:
    """Random weights (normal, std 0.02; norms at 1) with the layout of a loaded model."""
    shapes = _expected_shapes(cfg)
    rng = np.random.default_rng(seed)
    dtype = jnp.dtype(cfg.dtype)

    def normal(shape: tuple[int, ...]) -> np.ndarray:
        return 0.02 * rng.standard_normal(shape, np.float32)

    def init(name: str) -> np.ndarray:
        return np.ones(shapes[name], np.float32) if name.endswith("norm") else normal(shapes[name])

    def layer() -> dict[str, jax.Array]:
        separate = {name: init(name) for name in _layer_names(cfg)}
        return {name: jnp.asarray(arr, dtype) for name, arr in fuse_layer(separate).items()}

    params: Params = {
        "embed": jnp.asarray(normal((cfg.vocab_size, cfg.hidden_size)), dtype),
        "final_norm": jnp.ones((cfg.hidden_size,), dtype),
        "layers": [layer() for _ in range(cfg.num_layers)],
    }
    if not cfg.tie_word_embeddings:
        params["lm_head"] = jnp.asarray(normal((cfg.hidden_size, cfg.vocab_size)), dtype)
    return params


def load_hf_directory(path: Path, dtype: str = "float32") -> tuple[ModelConfig, Params]:
    """Reads config.json and every *.safetensors file of a local Hugging Face model directory."""
    from safetensors import SafetensorError, safe_open

    config_file = path / "config.json"
    files = sorted(path.glob("*.safetensors"))
    if not config_file.is_file() or not files:
        raise ModelLoadError(f"{path} is not a Hugging Face model directory (config.json + *.safetensors)")
    try:
        cfg = ModelConfig.from_hf_dict(json.loads(config_file.read_text()), dtype=dtype)
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ModelLoadError(f"cannot read {config_file}: {err!r}") from err
    tensors: dict[str, np.ndarray] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="flax") as f:
                for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                    tensors[name] = np.asarray(f.get_tensor(name).astype(jnp.float32))
        except (SafetensorError, OSError) as err:
            raise ModelLoadError(f"corrupt safetensors file {file}: {err}") from err
    if cfg.tie_word_embeddings is False and "lm_head.weight" not in tensors:
        cfg = cfg.replace(tie_word_embeddings=True)
    return cfg, params_from_hf_tensors(tensors.__getitem__, cfg)


def save_hf_directory(params: Params, cfg: ModelConfig, path: Path, model_type: str = "llama") -> None:
    """Writes config.json + model.safetensors that transformers' Llama/Mistral/Qwen2 classes load."""
    from safetensors.numpy import save_file

    path.mkdir(parents=True, exist_ok=True)
    save_file(hf_tensors_from_params(params, cfg), str(path / "model.safetensors"))
    hf_config = {
        "model_type": model_type,
        "architectures": [
            {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}[model_type]
        ],
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "attention_bias": cfg.attention_bias,
        "eos_token_id": list(cfg.eos_token_ids) or None,
        "torch_dtype": "float32",
    }
    if cfg.rope_scaling.rope_type != "default":
        s = cfg.rope_scaling
        hf_config["rope_scaling"] = {
            "rope_type": s.rope_type,
            "factor": s.factor,
            "low_freq_factor": s.low_freq_factor,
            "high_freq_factor": s.high_freq_factor,
            "original_max_position_embeddings": s.original_max_position_embeddings,
        }
    if model_type == "mistral":
        hf_config["sliding_window"] = cfg.sliding_window
    if model_type == "qwen2":
        hf_config["use_sliding_window"] = False
    (path / "config.json").write_text(json.dumps(hf_config, indent=2))

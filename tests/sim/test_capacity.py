"""KV capacity from a model config and a device memory size."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import pytest

from lamps_jax.config import PRESETS, ModelConfig
from lamps_jax.model.weights import init_params
from lamps_jax.sim.capacity import kv_capacity_tokens, load_model_config, num_parameters, parameters_per_device

LLAMA2_7B = {
    "model_type": "llama",
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
}
SMOLLM2_135M = {
    "model_type": "llama",
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "tie_word_embeddings": True,
}


def write_config(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize(("config", "published"), [(LLAMA2_7B, 6_738_415_616), (SMOLLM2_135M, 134_515_008)])
def test_parameter_counts_match_the_published_models(tmp_path: Path, config: dict, published: int) -> None:
    assert num_parameters(load_model_config(str(write_config(tmp_path, config)))) == published


def test_parameter_count_matches_the_initialized_pytree() -> None:
    model = PRESETS["tiny"]
    params = init_params(model, seed=0)
    assert num_parameters(model) == sum(leaf.size for leaf in jax.tree.leaves(params))


def test_capacity_is_the_memory_left_by_the_weights(tmp_path: Path) -> None:
    model = load_model_config(str(write_config(tmp_path, LLAMA2_7B)))
    # 90% of 40 GB minus 6.74e9 bf16 parameters, over 32 layers x (K, V) x 4096 x 2 bytes per token
    expected = int((0.9 * 40e9 - 2 * 6_738_415_616) // (32 * 2 * 4096 * 2))
    assert kv_capacity_tokens(model, 40e9) == expected == 42_959
    with pytest.raises(ValueError, match="leave no KV memory"):
        kv_capacity_tokens(model, 12e9)
    with pytest.raises(ValueError, match="utilization"):
        kv_capacity_tokens(model, 40e9, utilization=0)


def test_bad_model_configs_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither a preset"):
        load_model_config(str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="not a Hugging Face model config"):
        load_model_config(str(write_config(tmp_path, {"model_type": "llama"})))


def test_one_device_holds_every_parameter() -> None:
    for cfg in (PRESETS["tiny"], ModelConfig.from_hf_dict(LLAMA2_7B), ModelConfig.from_hf_dict(SMOLLM2_135M)):
        assert parameters_per_device(cfg, 1) == num_parameters(cfg)


def test_tensor_parallel_splits_weights_and_kv_per_device() -> None:
    llama = ModelConfig.from_hf_dict(LLAMA2_7B, dtype="bfloat16")
    layer = 4 * 4096 * 4096 + 3 * 4096 * 11008  # q, k, v, o and the MLP, split; the two norms are whole
    assert parameters_per_device(llama, 2) == 2 * 32000 * 4096 // 2 + 32 * (layer // 2 + 2 * 4096) + 4096
    assert llama.kv_bytes_per_token_per_device(2) == llama.kv_bytes_per_token // 2
    with pytest.raises(ValueError, match="leave no KV memory"):
        kv_capacity_tokens(llama, 14e9)  # 13.5 GB of weights in 12.6 GB
    free = 14e9 * 0.9 - parameters_per_device(llama, 2) * 2  # 5.9 GB per device, 256 KiB of KV per token
    assert kv_capacity_tokens(llama, 14e9, tensor_parallel=2) == int(free // (llama.kv_bytes_per_token // 2)) > 22_000


def test_fewer_kv_heads_than_devices_keep_one_per_device() -> None:
    tiny = PRESETS["tiny"]  # 2 kv heads: on 4 devices each holds one, each kv head lives on two
    assert tiny.kv_heads_per_device(4) == 1
    assert tiny.kv_bytes_per_token_per_device(4) == tiny.kv_bytes_per_token // 2
    with pytest.raises(ValueError, match="must divide"):
        kv_capacity_tokens(ModelConfig.from_hf_dict(SMOLLM2_135M), 16e9, tensor_parallel=2)  # 9 heads

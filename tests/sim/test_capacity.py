"""KV capacity from a model config and a device memory size."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import pytest

from lamps_jax.config import PRESETS
from lamps_jax.model.weights import init_params
from lamps_jax.sim.capacity import kv_capacity_tokens, load_model_config, num_parameters

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

"""The split layout on one device: per-shard fused columns and repeated kv heads compute the same logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lamps_jax.config import ModelConfig
from lamps_jax.model.llama import forward_paged
from lamps_jax.model.quantize import quantize_params
from lamps_jax.model.sharding import PARAM_RULES, param_spec, shard_layout, sharded_model_config
from lamps_jax.model.step_inputs import StepInputs
from lamps_jax.model.weights import init_params

PAGE_SIZE, NUM_PAGES = 4, 8


def _config(attention_bias: bool) -> ModelConfig:
    return ModelConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_layers=2,
        num_heads=8,
        num_kv_heads=2,
        head_dim=8,
        attention_bias=attention_bias,
    )


def _logits(params, cfg: ModelConfig, num_shards: int) -> np.ndarray:
    shape = (cfg.num_kv_heads, NUM_PAGES, PAGE_SIZE, cfg.head_dim)
    pages = [jnp.zeros(shape) for _ in range(cfg.num_layers)]
    tokens = np.arange(1, 11, dtype=np.int32).reshape(1, 10)
    inputs = StepInputs(tokens, np.zeros(1, np.int32), np.full(1, 10, np.int32), np.arange(1, 5)[None], np.int32(1))
    logits, _, _ = forward_paged(params, pages, list(pages), inputs, cfg, 4, num_shards=num_shards)
    return np.asarray(logits)


@pytest.mark.parametrize(
    ("tp", "quantized", "bias"),
    [(2, False, True), (4, True, False), (8, False, False)],  # 8 > 2 kv heads: each repeated 4 times
)
def test_split_layout_gives_the_same_logits(tp: int, quantized: bool, bias: bool) -> None:
    cfg = _config(bias)
    params = init_params(cfg, seed=1)
    if quantized:
        params = quantize_params(params)
    laid_out = jax.tree.map(jnp.asarray, shard_layout(params, cfg, tp))
    expected = _logits(params, cfg, 1)
    np.testing.assert_allclose(_logits(laid_out, sharded_model_config(cfg, tp), tp), expected, rtol=1e-5, atol=1e-5)


def test_every_param_has_a_rule_and_an_unsplit_vocabulary_is_replicated() -> None:
    cfg = _config(True)
    params = init_params(cfg)
    names = {*params, *params["layers"][0]} - {"layers"}
    assert names <= set(PARAM_RULES)
    assert param_spec("embed", cfg.replace(vocab_size=63), 2) == jax.sharding.PartitionSpec()
    with pytest.raises(ValueError, match="no sharding rule"):
        param_spec("w_new", cfg, 2)

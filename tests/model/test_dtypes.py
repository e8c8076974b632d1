"""bfloat16 weights, activations and KV pages serve and stay close to float32."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from lamps_jax.engine import LLMEngine
from lamps_jax.model.llama import forward_dense
from lamps_jax.model.registry import load_model
from lamps_jax.request import SamplingParams
from tests.conftest import small_engine_config


def test_bfloat16_logits_track_float32(tiny_model) -> None:
    bf16 = load_model("tiny", dtype="bfloat16", seed=0)
    assert bf16.params["embed"].dtype == jnp.bfloat16
    tokens = jnp.asarray(np.arange(1, 41))
    ref = np.asarray(forward_dense(tiny_model.params, tokens, tiny_model.config))
    got = np.asarray(forward_dense(bf16.params, tokens, bf16.config))
    # bf16 keeps 8 bits of mantissa: relative error ~1e-2 of the logit scale.
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()


def test_bfloat16_engine_generates() -> None:
    engine = LLMEngine(load_model("tiny", dtype="bfloat16"), small_engine_config(max_num_seqs=4, token_budget=16))
    assert engine.runner.kv.k[0].dtype == jnp.bfloat16
    engine.add_request(list(range(1, 30)), SamplingParams(max_tokens=5, ignore_eos=True))
    outputs = []
    while engine.has_unfinished_requests():
        outputs += engine.step()
    assert len(outputs[0].token_ids) == 5

"""Logits match Hugging Face transformers (PyTorch CPU) on the same weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lamps_jax.config import ModelConfig, RopeScaling
from lamps_jax.model.llama import forward_dense
from lamps_jax.model.sources import smollm2_gguf_path
from lamps_jax.model.weights import init_params, load_hf_directory, save_hf_directory

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow
transformers = pytest.importorskip("transformers")

BASE = dict(
    vocab_size=300,
    hidden_size=64,
    intermediate_size=160,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    rms_norm_eps=1e-6,
    max_position_embeddings=256,
)
CONFIGS = {
    "llama": ModelConfig(**BASE, rope_theta=10_000.0),
    "llama3-scaled-tied": ModelConfig(
        **BASE,
        rope_theta=500_000.0,
        tie_word_embeddings=True,
        rope_scaling=RopeScaling("llama3", 8.0, 1.0, 4.0, 64),
    ),
    "mistral": ModelConfig(**BASE, rope_theta=1_000_000.0),
    "qwen2": ModelConfig(**BASE, rope_theta=1_000_000.0, attention_bias=True),
}


def _hf_logits(model_dir, token_ids: list[int]) -> np.ndarray:
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        return hf(torch.tensor([token_ids])).logits[0].numpy()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_random_weights_match_transformers(name: str, tmp_path) -> None:
    cfg = CONFIGS[name]
    params = init_params(cfg, seed=3)
    # Larger weights than init's 0.02 so that attention patterns are far from uniform.
    params = jax.tree.map(lambda a: a * 5 if a.ndim > 1 else a, params)
    model_type = name.split("-")[0].replace("llama3", "llama")
    save_hf_directory(params, cfg, tmp_path, model_type=model_type)
    loaded_cfg, loaded = load_hf_directory(tmp_path)
    assert loaded_cfg.attention_bias == cfg.attention_bias
    assert loaded_cfg.rope_scaling == cfg.rope_scaling
    tokens = list(np.random.default_rng(0).integers(0, cfg.vocab_size, size=40))
    ours = np.asarray(forward_dense(loaded, jnp.asarray(tokens), loaded_cfg))
    theirs = _hf_logits(tmp_path, tokens)
    assert np.abs(ours - theirs).max() <= 1e-4


def test_smollm2_gguf_matches_transformers(smollm2_model) -> None:
    """Our GGUF path (dequantize + q/k un-permute) against transformers' own GGUF loader.

    Tolerance 1e-3: both sides dequantize the same Q4_1 blocks to float32, but the 30-layer f32
    forward accumulates in a different order (XLA vs PyTorch kernels); 1e-3 on logits of size ~20
    is still far below any change of the argmax.
    """
    path = smollm2_gguf_path()
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    tok = smollm2_model.tokenizer
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, tokenize=False
    )
    ids = tok.encode(prompt)
    with torch.no_grad():
        theirs = hf.eval()(torch.tensor([ids])).logits[0].numpy()
    ours = np.asarray(forward_dense(smollm2_model.params, jnp.asarray(ids), smollm2_model.config))
    assert np.abs(ours - theirs).max() <= 1e-3
    assert tok.decode([int(ours[-1].argmax())]).strip() == "The"

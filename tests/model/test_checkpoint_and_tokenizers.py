"""orbax round trip of params, and the tokenizers against transformers."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from lamps_jax.model.checkpoint import save_checkpoint
from lamps_jax.model.registry import load_model
from lamps_jax.model.sources import smollm2_gguf_path
from lamps_jax.model.tokenizer import byte_tokenizer
from lamps_jax.model.weights import ModelLoadError


def test_orbax_round_trip_is_exact(tiny_model, tmp_path) -> None:
    save_checkpoint(tmp_path / "ckpt", tiny_model.params, tiny_model.config, tiny_model.tokenizer)
    restored = load_model(str(tmp_path / "ckpt"))
    assert restored.config == tiny_model.config
    leaves = jax.tree.leaves(
        jax.tree.map(lambda a, b: bool((np.asarray(a) == np.asarray(b)).all()), tiny_model.params, restored.params)
    )
    assert leaves and all(leaves)
    assert restored.tokenizer.encode("héllo") == tiny_model.tokenizer.encode("héllo")


def test_damaged_checkpoint_is_a_clear_error(tiny_model, tmp_path) -> None:
    save_checkpoint(tmp_path / "ckpt", tiny_model.params, tiny_model.config)
    (tmp_path / "ckpt" / "lamps_config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot read checkpoint config"):
        load_model(str(tmp_path / "ckpt"))


def test_byte_tokenizer_round_trips_any_text() -> None:
    tok = byte_tokenizer(512)
    text = "Hello, wörld! 😀 \n\t 123"
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) == len(text.encode()) and tok.decode(ids) == text
    assert len(tok) == 512 and tok.eos_token_id == 0


@pytest.mark.slow
def test_gguf_tokenizer_matches_transformers(smollm2_model) -> None:
    transformers = pytest.importorskip("transformers")
    path = smollm2_gguf_path()
    reference = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    ours = smollm2_model.tokenizer
    chat = ours.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False)
    for text in [chat, "Numbers 1234567 and   spaces\n\nnew lines", "naïve café 😀 <|im_end|>"]:
        assert ours.encode(text) == reference.encode(text)
        assert ours.decode(ours.encode(text)) == text

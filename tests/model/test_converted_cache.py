"""A GGUF model is converted once: the next load reads the cached conversion (params, config and tokenizer all
as converted), a damaged conversion or a changed file converts again, and the cache keeps one per model."""

from __future__ import annotations

import os
import shutil

import jax
import numpy as np
import pytest

from lamps_jax.model import converted_cache
from lamps_jax.model.registry import load_model
from lamps_jax.model.sources import smollm2_gguf_path

pytestmark = pytest.mark.slow  # converts the real SmolLM2 weights

TEXTS = ["Numbers 1234567 and   spaces\n\nnew lines", "naïve café 😀 <|im_end|>"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A disk cache holding SmolLM2's conversion, and the model as converted."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAMPS_JAX_CACHE_DIR", str(root))
        converted = load_model("smollm2-135m")
    return root, converted


def _no_conversion(*args, **kwargs):
    raise AssertionError("the GGUF file was read again")


def test_the_second_load_reads_the_conversion(cache, monkeypatch) -> None:
    root, converted = cache
    monkeypatch.setenv("LAMPS_JAX_CACHE_DIR", str(root))
    monkeypatch.setattr("gguf.GGUFReader", _no_conversion)
    monkeypatch.setattr("lamps_jax.model.registry.load_gguf", _no_conversion)

    cached = load_model("smollm2-135m")

    assert cached.config == converted.config
    for ours, theirs in zip(jax.tree.leaves(cached.params), jax.tree.leaves(converted.params), strict=True):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    chat = [{"role": "user", "content": "Hi"}]
    assert cached.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) == (
        converted.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    )
    for text in TEXTS:
        assert cached.tokenizer.encode(text) == converted.tokenizer.encode(text)
    assert cached.tokenizer.eos_token == converted.tokenizer.eos_token

    bf16 = load_model("smollm2-135m", dtype="bfloat16")  # cast from the float32 conversion
    assert bf16.config.dtype == "bfloat16"
    assert {w.dtype for w in jax.tree.leaves(bf16.params)} == {np.dtype(jax.numpy.bfloat16)}


def test_a_damaged_conversion_or_a_changed_file_converts_again(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("LAMPS_JAX_CACHE_DIR", str(tmp_path))
    gguf = tmp_path / "model.gguf"
    shutil.copyfile(smollm2_gguf_path(), gguf)  # a file of this test's own, to change
    load_model(str(gguf))
    (folder,) = (tmp_path / "models").iterdir()
    (folder / converted_cache.PARAMS_FILE).write_bytes(b"cut short")

    calls = []
    real = converted_cache.load_converted

    def counting(path, convert, convert_tokenizer):
        return real(path, lambda: calls.append(path) or convert(), convert_tokenizer)

    monkeypatch.setattr("lamps_jax.model.registry.load_converted", counting)
    load_model(str(gguf))
    assert calls == [gguf]  # damaged: converted again
    load_model(str(gguf))
    assert calls == [gguf]  # repaired
    os.utime(gguf, ns=(0, 1))  # another version of the file
    load_model(str(gguf))
    assert len(calls) == 2 and [d.name != folder.name for d in (tmp_path / "models").iterdir()] == [True]


def test_a_damaged_tokenizer_is_converted_again_and_its_conversion_dropped(monkeypatch, tmp_path) -> None:
    """The tokenizer loads on a thread beside the params: one that does not load is rebuilt from the GGUF file's
    metadata alone (the model still serves), and the conversion is dropped so that the next start converts it whole."""
    monkeypatch.setenv("LAMPS_JAX_CACHE_DIR", str(tmp_path))
    gguf = tmp_path / "model.gguf"
    shutil.copyfile(smollm2_gguf_path(), gguf)
    want = load_model(str(gguf)).tokenizer.encode(TEXTS[0])
    (folder,) = (tmp_path / "models").iterdir()
    (folder / converted_cache.TOKENIZER_DIR / "tokenizer.json").write_text("{cut short")

    with monkeypatch.context() as patch:
        patch.setattr("lamps_jax.model.registry.load_gguf", _no_conversion)  # the params are not converted again
        loaded = load_model(str(gguf))
        assert loaded.tokenizer.encode(TEXTS[0]) == want
    assert not folder.exists()
    assert load_model(str(gguf)).tokenizer.encode(TEXTS[0]) == want  # converted whole again
    assert folder.is_dir()


def test_a_change_to_the_converting_code_names_a_new_conversion(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("LAMPS_JAX_CACHE_DIR", str(tmp_path))
    before = converted_cache.conversion_dir(smollm2_gguf_path())
    monkeypatch.setattr(converted_cache, "_code_fingerprint", lambda: "edited")
    assert converted_cache.conversion_dir(smollm2_gguf_path()) != before


def test_nothing_is_kept_when_the_cache_is_off(monkeypatch) -> None:
    monkeypatch.setenv("LAMPS_JAX_CACHE_DIR", "")
    assert converted_cache.conversion_dir(smollm2_gguf_path()) is None

"""Bad input gets a clear error and leaves the engine serving."""

from __future__ import annotations

import pytest

from lamps_jax.engine import InvalidRequestError, LLMEngine
from lamps_jax.model.registry import load_model
from lamps_jax.model.weights import ModelLoadError
from lamps_jax.request import SamplingParams


def test_invalid_requests_are_rejected_and_the_engine_keeps_serving(tiny_engine: LLMEngine) -> None:
    with pytest.raises(InvalidRequestError, match="empty"):
        tiny_engine.add_request("")
    with pytest.raises(InvalidRequestError, match="empty"):
        tiny_engine.add_request([])
    with pytest.raises(InvalidRequestError, match="context is 128"):
        tiny_engine.add_request([5] * 128)
    with pytest.raises(InvalidRequestError, match="token ids must be in"):
        tiny_engine.add_request([5, 100_000])
    assert not tiny_engine.has_unfinished_requests()
    req_id = tiny_engine.add_request("still fine", SamplingParams(max_tokens=3))
    outputs = []
    while tiny_engine.has_unfinished_requests():
        outputs += tiny_engine.step()
    assert [o.req_id for o in outputs] == [req_id] and len(outputs[0].token_ids) == 3


def test_request_that_can_never_fit_the_kv_memory(tiny_model) -> None:
    from tests.conftest import small_engine_config

    engine = LLMEngine(tiny_model, small_engine_config(page_size=4, num_pages=9))  # 8 pages = 32 tokens
    with pytest.raises(InvalidRequestError, match="KV memory holds 8 pages"):
        engine.add_request([1] * 20, SamplingParams(max_tokens=20))
    req_id = engine.add_request([1] * 20, SamplingParams(max_tokens=12, ignore_eos=True))  # exactly 32 tokens: fits
    outputs = []
    while engine.has_unfinished_requests():
        outputs += engine.step()
    assert [(o.req_id, o.finish_reason, len(o.token_ids)) for o in outputs] == [(req_id, "length", 12)]
    assert engine.page_pool.num_free == engine.page_pool.num_usable


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"stop": ("",)}, "stop strings"),
    ],
)
def test_bad_sampling_params(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_unknown_model_name() -> None:
    with pytest.raises(ModelLoadError, match=r"unknown model 'llama-9000'.*tiny"):
        load_model("llama-9000")


def test_corrupt_weight_files(tmp_path) -> None:
    bad_gguf = tmp_path / "broken.gguf"
    bad_gguf.write_bytes(b"GGUF" + b"\x00\x17" * 50)
    with pytest.raises(ModelLoadError, match="corrupt or unreadable GGUF"):
        load_model(str(bad_gguf))

    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text('{"model_type": "llama", "vocab_size": 10}')
    (hf_dir / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(ModelLoadError, match="cannot read"):
        load_model(str(hf_dir))

    (hf_dir / "config.json").write_text(
        '{"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8, '
        '"num_hidden_layers": 1, "num_attention_heads": 2}'
    )
    with pytest.raises(ModelLoadError, match=r"corrupt safetensors|missing"):
        load_model(str(hf_dir))

    (hf_dir / "model.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(ModelLoadError, match="corrupt safetensors"):
        load_model(str(hf_dir))


@pytest.mark.parametrize("field", [{"seed": -1}, {"seed": 2**32}, {"top_k": 2**31}])
def test_sampling_params_out_of_the_samplers_range_are_refused(field: dict) -> None:
    """The sampler casts seeds to uint32 and top_k to int32: a value outside would kill the engine loop."""
    with pytest.raises(ValueError, match="must be in"):
        SamplingParams(**field)

"""The CPU int8 kernel (cpu_kernels/int8_matmul.cc) and its packed weights, against XLA's int8 path."""

from __future__ import annotations

import stat

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lamps_jax.cpu_kernels import build
from lamps_jax.engine import LLMEngine
from lamps_jax.model import packed_int8
from lamps_jax.model.quantize import Int8Weight, PackedInt8Weight, matmul, quantize, quantize_params
from lamps_jax.model.registry import LoadedModel
from lamps_jax.model.weights import init_params
from tests.conftest import small_engine_config
from tests.engine.test_paged_vs_dense import run_engine

needs_kernel = pytest.mark.skipif(
    packed_int8.kernel_unavailable() is not None, reason=f"int8 kernel: {packed_int8.kernel_unavailable()}"
)


def _int8(rng: np.random.Generator, k: int, n: int) -> Int8Weight:
    return quantize(rng.standard_normal((k, n), np.float32), 0)


def test_pack_puts_64_columns_together_and_pads_with_zeros() -> None:
    w = _int8(np.random.default_rng(0), 5, 70)
    packed = packed_int8.pack(np.asarray(w.values), np.asarray(w.scale))
    assert packed.blocks.shape == (2, 5, 64) and packed.scale.shape == (70,)
    values = np.asarray(w.values)
    assert (packed.blocks[1, :, :6] == values[:, 64:]).all() and (packed.blocks[0] == values[:, :64]).all()
    assert not packed.blocks[1, :, 6:].any()


@needs_kernel
@pytest.mark.parametrize(
    ("lead", "k", "n"),
    [((1,), 576, 960), ((0,), 64, 64), ((5,), 1, 33), ((6,), 100, 64), ((7,), 96, 65), ((2, 13), 130, 200)],
)
def test_kernel_equals_int8_matmul(lead: tuple[int, ...], k: int, n: int) -> None:
    """Rows not a multiple of the kernel's 6-row tile, columns not of its 64-column block, leading axes, no rows:
    the same numbers as XLA's int8 matmul up to float32 summation order."""
    rng = np.random.default_rng(k * n)
    x, w = rng.standard_normal((*lead, k), np.float32), _int8(rng, k, n)
    packed = packed_int8.pack(np.asarray(w.values), np.asarray(w.scale))
    got = np.asarray(jax.jit(matmul)(x, packed))
    exact = (x.astype(np.float64) @ np.asarray(w.values, np.float64)) * np.asarray(w.scale, np.float64)
    assert got.shape == (*lead, n) and got.dtype == np.float32
    np.testing.assert_allclose(got, exact, atol=1e-5 * max(1.0, np.abs(exact).max(initial=0)), rtol=0)
    np.testing.assert_allclose(got, np.asarray(matmul(jnp.asarray(x), w)), atol=1e-4, rtol=1e-5)


def _tied(model: LoadedModel) -> LoadedModel:
    """``model``'s config with the output layer tied to the embedding (as SmolLM2's), fresh weights."""
    cfg = model.config.replace(tie_word_embeddings=True)
    return LoadedModel(cfg, init_params(cfg, 1), model.tokenizer)


def test_pack_params_packs_weight_only_int8_and_gives_a_tied_embedding_a_packed_output_layer(tiny_model) -> None:
    cfg = tiny_model.config
    untied = packed_int8.pack_params(quantize_params(tiny_model.params), False)
    assert all(type(w) is PackedInt8Weight for name, w in untied["layers"][0].items() if name.startswith("w"))
    assert type(untied["lm_head"]) is PackedInt8Weight and type(untied["embed"]) is Int8Weight
    assert untied["layers"][0]["attn_norm"] is tiny_model.params["layers"][0]["attn_norm"]

    tied = _tied(tiny_model)
    int8 = quantize_params(tied.params)
    packed = packed_int8.pack_params(int8, True)
    assert packed["embed"] is int8["embed"]  # the token lookup reads its rows
    assert packed["lm_head"].blocks.shape == (-(-cfg.vocab_size // 64), cfg.hidden_size, 64)
    w8a8 = quantize_params(tied.params, activations=True)
    assert packed_int8.pack_params(w8a8, True) == w8a8  # w8a8 keeps its own int8 x int8 path


@needs_kernel
@pytest.mark.parametrize("tied", [False, True])
def test_int8_engine_runs_the_kernel_and_generates_xlas_greedy_tokens(monkeypatch, tiny_model, tied: bool) -> None:
    """The same greedy tokens through the packed kernel as through XLA's int8 matmuls (kernels off), over
    prefill chunks and decode rows of several batch sizes, with an untied and a tied output layer."""
    source = _tied(tiny_model) if tied else tiny_model
    model = LoadedModel(source.config, quantize_params(source.params), source.tokenizer)
    rng = np.random.default_rng(3)
    prompts = [list(rng.integers(1, model.config.vocab_size, size=n)) for n in (2, 7, 19, 40, 5)]
    engine = LLMEngine(model, small_engine_config(max_num_seqs=4, token_budget=16))
    assert type(engine.runner.params["layers"][0]["w_down"]) is PackedInt8Weight
    assert type(engine.runner.params["lm_head"]) is PackedInt8Weight
    got = run_engine(engine, prompts, [7] * len(prompts))
    monkeypatch.setenv(build.DISABLE_ENV, "0")
    with pytest.warns(UserWarning, match="int8 matmuls run through XLA.*turned off"):
        xla = LLMEngine(model, small_engine_config(max_num_seqs=4, token_budget=16))
    assert type(xla.runner.params["layers"][0]["w_down"]) is Int8Weight
    assert got == run_engine(xla, prompts, [7] * len(prompts))


def test_a_failed_build_says_why_and_int8_stays_on_xlas_path(tmp_path, monkeypatch, tiny_model) -> None:
    """A compiler that fails: the reason (its command and output) in the warning, the params as they came."""
    compiler = tmp_path / "failing-c++"
    compiler.write_text("#!/bin/sh\necho 'no such header' >&2\nexit 1\n")
    compiler.chmod(compiler.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CXX", str(compiler))
    monkeypatch.setenv("LAMPS_JAX_CACHE_DIR", str(tmp_path / "cache"))
    build._built.cache_clear()
    try:
        params = quantize_params(tiny_model.params)
        with pytest.warns(UserWarning, match="(?s)building int8_matmul.cc failed.*no such header"):
            assert packed_int8.for_cpu_kernel(params, tiny_model.config) is params
        assert not list((tmp_path / "cache").rglob("*.so*"))  # no library, and no half-written one left behind
    finally:
        build._built.cache_clear()  # the next caller finds the real build again


@needs_kernel
def test_the_library_is_named_by_its_source(tmp_path, monkeypatch) -> None:
    """A changed kernel source builds a new library instead of loading the old one."""
    compiler = build._compiler()
    flags = build._flags(jax.ffi.include_dir())
    before = build._library_path("int8_matmul", compiler, flags)
    (tmp_path / "int8_matmul.cc").write_text((build.SOURCE_DIR / "int8_matmul.cc").read_text() + "\n// changed\n")
    monkeypatch.setattr(build, "SOURCE_DIR", tmp_path)
    after = build._library_path("int8_matmul", compiler, flags)
    assert after != before and after.parent == before.parent

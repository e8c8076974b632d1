"""The persistent compilation cache: on by default for every runner, in LAMPS_JAX_CACHE_DIR, off when that is
empty, and never over a cache directory the process chose itself."""

from __future__ import annotations

import jax
import pytest

from lamps_jax.compilation_cache import DEFAULT_CACHE_DIR, enable_compilation_cache


@pytest.fixture
def no_cache_dir():
    before = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", None)
    yield
    jax.config.update("jax_compilation_cache_dir", before)


def test_the_cache_goes_to_the_environments_folder_or_the_default(no_cache_dir, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("LAMPS_JAX_CACHE_DIR", str(tmp_path))
    assert enable_compilation_cache() == str(tmp_path) == jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", None)
    monkeypatch.delenv("LAMPS_JAX_CACHE_DIR")
    assert enable_compilation_cache() == str(DEFAULT_CACHE_DIR)


def test_an_empty_folder_turns_it_off_and_a_chosen_one_is_kept(no_cache_dir, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("LAMPS_JAX_CACHE_DIR", "")
    assert enable_compilation_cache() is None and not jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
    monkeypatch.setenv("LAMPS_JAX_CACHE_DIR", str(tmp_path / "ours"))
    assert enable_compilation_cache() == str(tmp_path / "mine")

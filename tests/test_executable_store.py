"""The executable store: a stored step loads without tracing and computes what the compiled one does; every input
the executable depends on changes its key; an unreadable file is compiled over; old source versions are dropped;
the default store's folder, and when it is off."""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lamps_jax import executable_store
from lamps_jax.disk_cache import DEFAULT_CACHE_ROOT
from lamps_jax.executable_store import ExecutableStore, default_store

traces = 0


@functools.partial(jax.jit, static_argnames=("scale",), donate_argnums=(0,))
def _update(pages, rows, *, scale: float):
    global traces
    traces += 1
    return pages.at[rows].add(scale), (pages * scale).sum()


def _args(num_pages: int = 8):
    return jnp.zeros((num_pages, 4), jnp.float32), np.array([1, 3], np.int32)


def test_a_stored_executable_loads_without_tracing_and_computes_the_same(tmp_path) -> None:
    store = ExecutableStore(tmp_path)
    pages, rows = _args()
    key = store.key("update", (pages, rows), {"scale": 2.0})
    assert store.load(key) is None
    store.save(key, _update.lower(pages, rows, scale=2.0).compile())
    before = traces

    loaded = ExecutableStore(tmp_path).load(key)
    new_pages, total = loaded(pages, rows)  # the donated pages are consumed, as by the compiled step

    assert traces == before
    np.testing.assert_array_equal(np.asarray(new_pages)[[1, 3]], np.full((2, 4), 2.0))
    assert float(total) == 0.0 and pages.is_deleted()


def test_the_key_names_shapes_dtypes_static_arguments_and_the_function(tmp_path) -> None:
    store = ExecutableStore(tmp_path)
    pages, rows = _args()
    key = store.key("update", (pages, rows), {"scale": 2.0})
    assert key == store.key("update", _args(), {"scale": 2.0})
    others = [
        store.key("update", _args(num_pages=16), {"scale": 2.0}),
        store.key("update", (pages.astype(jnp.bfloat16), rows), {"scale": 2.0}),
        store.key("update", (pages, rows), {"scale": 3.0}),
        store.key("other", (pages, rows), {"scale": 2.0}),
        store.key("update", ((pages,), rows), {"scale": 2.0}),  # another tree
    ]
    assert len({key, *others}) == 1 + len(others)


def test_an_unreadable_file_is_a_miss_and_is_written_over(tmp_path) -> None:
    store = ExecutableStore(tmp_path)
    pages, rows = _args()
    key = store.key("update", (pages, rows), {"scale": 2.0})
    (tmp_path / f"{key}.bin").write_bytes(b"truncated")
    assert store.load(key) is None and store.loaded == 0
    store.save(key, _update.lower(pages, rows, scale=2.0).compile())
    assert store.load(key) is not None and store.loaded == 1
    assert [p.suffix for p in store.version_dir.iterdir()] == [".bin"]  # no temporary file left


def test_only_the_latest_source_versions_are_kept(tmp_path) -> None:
    store = ExecutableStore(tmp_path)
    older = [tmp_path / f"version{i}" for i in range(3)]
    for age, folder in enumerate(older):
        folder.mkdir()
        (folder / "step.bin").write_bytes(b"old")
        os.utime(folder, (1000 + age, 1000 + age))
    pages, rows = _args()
    key = store.key("update", (pages, rows), {"scale": 2.0})
    store.save(key, _update.lower(pages, rows, scale=2.0).compile())
    kept = sorted(d.name for d in tmp_path.iterdir())
    assert len(kept) == executable_store.KEEP_VERSIONS
    assert kept == sorted([store.version_dir.name, "version2"])  # the current version and the newest other


@pytest.fixture
def no_jax_cache():
    before = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", None)
    yield
    jax.config.update("jax_compilation_cache_dir", before)


def test_the_default_store_is_in_the_environments_folder_or_the_default(no_jax_cache, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("LAMPS_JAX_CACHE_DIR", str(tmp_path))
    assert default_store().directory == tmp_path / "executables"
    monkeypatch.delenv("LAMPS_JAX_CACHE_DIR")
    assert default_store().directory == DEFAULT_CACHE_ROOT / "executables"


def test_it_is_off_when_emptied_or_when_jaxs_own_cache_is_on(no_jax_cache, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("LAMPS_JAX_CACHE_DIR", "")
    assert default_store() is None
    monkeypatch.setenv("LAMPS_JAX_CACHE_DIR", str(tmp_path))
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "theirs"))  # an embedding codebase's choice
    assert default_store() is None


def test_a_code_change_makes_every_key_and_folder_new(tmp_path, monkeypatch) -> None:
    store = ExecutableStore(tmp_path)
    pages, rows = _args()
    key, folder = store.key("update", (pages, rows), {"scale": 2.0}), store.version_dir
    store.save(key, _update.lower(pages, rows, scale=2.0).compile())
    monkeypatch.setattr(executable_store, "source_fingerprint", lambda: "edited" * 8)
    assert store.key("update", (pages, rows), {"scale": 2.0}) != key and store.version_dir != folder
    assert store.load(key) is None  # the old executable is not found under the new version

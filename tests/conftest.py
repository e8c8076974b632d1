"""Shared fixtures: small engine configs over the tiny preset, and the loaded models; the suite's XLA setting."""

from __future__ import annotations

import os

# Tests compile far more than they run: LLVM's optimization level 0 halves a SmolLM2 step's compile time (11.6 ->
# 5.9 s; tiny's engine 19 -> 13 s) for steps ~30% slower; the suite passes at either level. Set before JAX starts
# its backend; the subprocesses tests start (the README's blocks, the device check) inherit it.
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

import jax
import pytest

from lamps_jax.config import CacheConfig, EngineConfig, SchedulerConfig
from lamps_jax.engine import LLMEngine
from lamps_jax.model.registry import LoadedModel, load_model

jax.config.update("jax_platforms", "cpu")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with slow tests first, in their collected order otherwise: ``make test``'s two workers take whole
    files (``--dist loadfile``) in this order, so the longest start early instead of ending the run alone."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


def small_engine_config(
    page_size: int = 4,
    num_pages: int = 256,
    max_num_seqs: int = 16,
    token_budget: int = 32,
    max_model_len: int = 128,
    query_block: int = 8,
) -> EngineConfig:
    return EngineConfig(
        cache=CacheConfig(page_size=page_size, num_pages=num_pages),
        scheduler=SchedulerConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=token_budget),
        max_model_len=max_model_len,
        query_block=query_block,
        kv_block_tokens=max(32, page_size),
    )


@pytest.fixture(scope="session")
def tiny_model() -> LoadedModel:
    return load_model("tiny", seed=0)


@pytest.fixture(scope="session")
def smollm2_model() -> LoadedModel:
    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_engine(tiny_model: LoadedModel) -> LLMEngine:
    """One warmed engine for tests that leave it idle (every request run to completion)."""
    return LLMEngine(tiny_model, small_engine_config())

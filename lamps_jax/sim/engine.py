"""A simulated engine: the real ``LLMEngine`` over a ``SimRunner`` and a ``VirtualClock``.

KV capacity is given in tokens, or taken from the cost profile (e.g. GPT-J-6B on a 40 GB A100);
the token budget and swap budget come from the profile too. The stand-in model config only serves
request validation; nothing is computed.
"""

from __future__ import annotations

import dataclasses

from lamps_jax.clock import VirtualClock
from lamps_jax.config import CacheConfig, EngineConfig, ModelConfig, SchedulerConfig
from lamps_jax.engine import LLMEngine
from lamps_jax.model.registry import LoadedModel
from lamps_jax.scheduler.cost_model import CostModel
from lamps_jax.sim.sim_runner import SimRunner

HOST_PAGES_PER_DEVICE_PAGE = 4  # host memory for swapped KV, relative to the device's KV memory


def simulated_engine(
    cost: CostModel,
    scheduler: SchedulerConfig,
    kv_capacity_tokens: int | None = None,
    page_size: int = 16,
    max_model_len: int = 8192,
) -> LLMEngine:
    capacity = kv_capacity_tokens or cost.kv_capacity_tokens
    if not capacity:
        raise ValueError(f"cost profile {cost.name!r} has no KV capacity: pass kv_capacity_tokens")
    num_pages = capacity // page_size + 1
    swap_pages = 10**9 if cost.swap_budget_tokens is None else max(1, cost.swap_budget_tokens // page_size)
    scheduler = dataclasses.replace(
        scheduler,
        max_num_batched_tokens=cost.token_budget,
        max_swap_pages_per_step=swap_pages,
        num_host_pages=scheduler.num_host_pages or HOST_PAGES_PER_DEVICE_PAGE * num_pages,
    )
    config = EngineConfig(
        cache=CacheConfig(page_size=page_size, num_pages=num_pages),
        scheduler=scheduler,
        max_model_len=max_model_len,
        api_timeout=None,
    )
    model_config = ModelConfig(
        vocab_size=1 << 16,
        hidden_size=8,
        intermediate_size=8,
        num_layers=1,
        num_heads=1,
        num_kv_heads=1,
        head_dim=8,
        max_position_embeddings=max_model_len,
    )
    clock = VirtualClock()
    runner = SimRunner(cost, clock, page_size)
    return LLMEngine(LoadedModel(model_config, None, None), config, clock, runner)

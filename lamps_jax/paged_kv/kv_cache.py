"""Device KV page arrays: one K and one V array per layer, ``[K, P, S, H]`` each.

Separate arrays per layer are what the paged-attention kernels take and let every layer's write
happen in place; the runner donates all of them to every step. Page 0 is the padding page
(see ``page_pool``).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from lamps_jax.config import ModelConfig


@dataclass
class KVPages:
    k: list[jax.Array]  # per layer [K, P, S, H]
    v: list[jax.Array]  # per layer [K, P, S, H]

    @classmethod
    def allocate(cls, cfg: ModelConfig, num_pages: int, page_size: int, device: jax.Device) -> KVPages:
        shape = (cfg.num_kv_heads, num_pages, page_size, cfg.head_dim)
        sharding = jax.sharding.SingleDeviceSharding(device)
        zeros = jax.jit(lambda: jnp.zeros(shape, jnp.dtype(cfg.dtype)), out_shardings=sharding)
        # One call per array: no two of them may share a buffer, since all are donated.
        return cls([zeros() for _ in range(cfg.num_layers)], [zeros() for _ in range(cfg.num_layers)])

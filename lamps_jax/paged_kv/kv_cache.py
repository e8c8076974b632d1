"""Device KV page arrays: one K and one V array per layer, ``[K, P, S, H]`` each.

Separate arrays per layer are what the paged-attention kernels take and let every layer's write
happen in place; the runner donates all of them to every step. Page 0 is the padding page
(see ``page_pool``). On one device they live on it; under tensor parallelism each array is split
over its kv-head axis (``model/sharding.py``).
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
    def allocate(cls, cfg: ModelConfig, num_pages: int, page_size: int, sharding: jax.sharding.Sharding) -> KVPages:
        """Zeroed pages placed by ``sharding``: a ``SingleDeviceSharding``, or a kv-head split over a mesh."""
        shape = (cfg.num_kv_heads, num_pages, page_size, cfg.head_dim)
        zeros = jax.jit(lambda: jnp.zeros(shape, jnp.dtype(cfg.dtype)), out_shardings=sharding)
        # One call per array: no two of them may share a buffer, since all are donated.
        return cls([zeros() for _ in range(cfg.num_layers)], [zeros() for _ in range(cfg.num_layers)])

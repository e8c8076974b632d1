"""Device KV page arrays: K and V for every layer, ``[L, K, P, S, H]`` each.

Layers are stacked so the model's layer scan carries the caches and updates them in place; the
runner donates both arrays to every step. Page 0 is the padding page (see ``page_pool``).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from lamps_jax.config import ModelConfig


@dataclass
class KVPages:
    k: jax.Array  # [L, K, P, S, H]
    v: jax.Array  # [L, K, P, S, H]

    @classmethod
    def allocate(cls, cfg: ModelConfig, num_pages: int, page_size: int, device: jax.Device) -> KVPages:
        shape = (cfg.num_layers, cfg.num_kv_heads, num_pages, page_size, cfg.head_dim)
        sharding = jax.sharding.SingleDeviceSharding(device)
        zeros = jax.jit(lambda: jnp.zeros(shape, jnp.dtype(cfg.dtype)), out_shardings=sharding)
        return cls(zeros(), zeros())  # two calls: K and V must not share a buffer (both are donated)

    @property
    def num_pages(self) -> int:
        return self.k.shape[2]

    @property
    def page_size(self) -> int:
        return self.k.shape[3]

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
import numpy as np

from lamps_jax.config import ModelConfig


@dataclass
class KVPages:
    k: list[jax.Array]  # per layer [K, P, S, H]
    v: list[jax.Array]  # per layer [K, P, S, H]

    @classmethod
    def allocate(cls, cfg: ModelConfig, num_pages: int, page_size: int, sharding: jax.sharding.Sharding) -> KVPages:
        """Zeroed pages placed by ``sharding``: a ``SingleDeviceSharding``, or a kv-head split over a mesh."""
        shape = (cfg.num_kv_heads, num_pages, page_size, cfg.head_dim)
        count, dtype = 2 * cfg.num_layers, jnp.dtype(cfg.dtype)
        if all(device.platform == "cpu" for device in sharding.device_set):
            # numpy zeros (untouched memory) copied over in one call: no compile, unlike a jitted jnp.zeros
            pages = jax.device_put([np.zeros(shape, dtype) for _ in range(count)], sharding)
        else:  # made where they live (an accelerator's pool is not sent from the host), one call per array
            zeros = jax.jit(lambda: jnp.zeros(shape, dtype), out_shardings=sharding)
            pages = [zeros() for _ in range(count)]
        return cls(pages[: cfg.num_layers], pages[cfg.num_layers :])  # each its own buffer: all are donated

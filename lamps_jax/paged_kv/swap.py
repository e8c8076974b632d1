"""Swapping a request's KV pages between device page arrays and host memory (JAX memory kinds).

Swap-out is one jitted gather of the request's pages over all layers whose output lands in
``pinned_host`` memory; swap-in is a ``device_put`` back followed by one jitted scatter that donates
the page arrays. Page counts are padded to power-of-two buckets with page 0 (the padding page), so
every bucket is compiled once in ``warmup``. All calls dispatch asynchronously: a swap issued before
a step overlaps with it wherever the backend runs copies and compute concurrently, and JAX's buffer
dependencies order the copies against the steps that reuse the pages.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from lamps_jax.paged_kv.kv_cache import KVPages


@dataclass(frozen=True)
class HostKV:
    """One request's swapped-out pages: [L, K, n, S, H] each, n = the padded page count."""

    k: jax.Array
    v: jax.Array
    num_pages: int  # real pages; the rest of the bucket is padding

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes


def _gather(k_pages: list[jax.Array], v_pages: list[jax.Array], page_ids: jax.Array):
    return jnp.stack([k[:, page_ids] for k in k_pages]), jnp.stack([v[:, page_ids] for v in v_pages])


def _scatter(k_pages: list[jax.Array], v_pages: list[jax.Array], k_host, v_host, page_ids: jax.Array):
    new_k = [k.at[:, page_ids].set(k_host[i]) for i, k in enumerate(k_pages)]
    new_v = [v.at[:, page_ids].set(v_host[i]) for i, v in enumerate(v_pages)]
    return new_k, new_v


class HostSwapper:
    def __init__(self, device: jax.Device, max_pages_per_request: int) -> None:
        kinds = {m.kind for m in device.addressable_memories()}
        memory_kind = "pinned_host" if "pinned_host" in kinds else "unpinned_host"
        self.host_sharding = jax.sharding.SingleDeviceSharding(device, memory_kind=memory_kind)
        self.device_sharding = jax.sharding.SingleDeviceSharding(device)
        self.buckets = [1]
        while self.buckets[-1] < max_pages_per_request:
            self.buckets.append(self.buckets[-1] * 2)
        self._gather = jax.jit(_gather, out_shardings=(self.host_sharding, self.host_sharding))
        self._scatter = jax.jit(_scatter, donate_argnums=(0, 1))

    def _padded_ids(self, page_ids: list[int]) -> np.ndarray:
        bucket = next(b for b in self.buckets if b >= len(page_ids))
        ids = np.zeros(bucket, np.int32)
        ids[: len(page_ids)] = page_ids
        return ids

    def swap_out(self, kv: KVPages, page_ids: list[int]) -> HostKV:
        k, v = self._gather(kv.k, kv.v, self._padded_ids(page_ids))
        return HostKV(k, v, len(page_ids))

    def swap_in(self, kv: KVPages, host: HostKV, page_ids: list[int]) -> None:
        """Writes ``host`` into ``page_ids`` (as many as it holds) of ``kv``, in place."""
        if len(page_ids) != host.num_pages:
            raise ValueError(f"swap-in of {host.num_pages} pages into {len(page_ids)} device pages")
        ids = self._padded_ids(page_ids)
        k_dev, v_dev = jax.device_put((host.k, host.v), self.device_sharding)
        kv.k, kv.v = self._scatter(kv.k, kv.v, k_dev, v_dev, ids)

    def warmup(self, kv: KVPages) -> None:
        """Compiles every bucket: a round trip of padding pages (page 0 onto itself)."""
        for bucket in self.buckets:
            host = self.swap_out(kv, [0] * bucket)
            self.swap_in(kv, host, [0] * bucket)
        jax.block_until_ready(kv.k)

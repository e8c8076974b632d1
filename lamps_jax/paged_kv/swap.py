"""Swapping KV pages between the device page arrays and a preallocated host page store.

The host store holds ``num_host_pages`` pages (page 0 = padding, as on the device) for K and V,
``[P_host, L, K, S, H]`` each, allocated once: the host memory the scheduler's host pool counts is
exactly the memory used. A swap moves pages between device page ids and host page ids:
- out: one jitted gather of the device pages over all layers (page count padded to a power-of-two
  bucket with page 0), a device->host copy started at once (``copy_to_host_async``), and a write
  into the store's host pages that completes lazily (``flush``, at the next swap or step), so the
  copy overlaps the step it was issued before;
- in: the store's host pages (padded the same way), one ``device_put``, and one jitted scatter that
  donates the page arrays.
The store is host (pageable) memory, not a JAX ``pinned_host`` array: JAX 0.10-0.12 cannot gather
from a ``pinned_host`` array inside a jitted function ("memory_space of all inputs ... must be the
same"), so a store of that kind could not be indexed by host page ids. Every bucket is compiled in
``warmup``; all calls dispatch asynchronously and JAX's buffer dependencies order them against the
steps that reuse the device pages.

Under tensor parallelism the page arrays are split over their kv-head axis, and so is everything a swap
moves: the gathered pages keep that split (``[n, L, K, S, H]`` split on K), each device's shard is copied
to a host store of that device's own (``[P_host, L, K / tp, S, H]``, on the host of the device's process),
and a swap-in puts each store's pages back on its device. No page crosses devices or processes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from lamps_jax.paged_kv.kv_cache import KVPages


def _gather(k_pages: list[jax.Array], v_pages: list[jax.Array], page_ids: jax.Array):
    """[n, L, K, S, H] for K and V: the pages one after another, each contiguous over its layers."""
    return tuple(jnp.stack([x[:, page_ids] for x in pages]).transpose(2, 0, 1, 3, 4) for pages in (k_pages, v_pages))


def _scatter(k_pages: list[jax.Array], v_pages: list[jax.Array], k_host, v_host, page_ids: jax.Array):
    """Inverse of ``_gather``: [n, L, K, S, H] into the pages ``page_ids`` of every layer."""
    new_k = [k.at[:, page_ids].set(k_host[:, i].swapaxes(0, 1)) for i, k in enumerate(k_pages)]
    new_v = [v.at[:, page_ids].set(v_host[:, i].swapaxes(0, 1)) for i, v in enumerate(v_pages)]
    return new_k, new_v


def _swap_shardings(pages: jax.sharding.Sharding) -> tuple[jax.sharding.Sharding, jax.sharding.Sharding]:
    """(moved, ids): gathered pages [n, L, K, S, H] placed like the page arrays' kv heads; page ids replicated."""
    if isinstance(pages, NamedSharding):
        return NamedSharding(pages.mesh, PartitionSpec(None, None, *pages.spec)), NamedSharding(
            pages.mesh, PartitionSpec()
        )
    return pages, pages


class HostSwapper:
    def __init__(self, kv: KVPages, num_host_pages: int, max_pages_per_request: int) -> None:
        pages = kv.k[0].sharding
        self.moved_sharding, ids = _swap_shardings(pages)
        num_kv_heads, _, page_size, head_dim = kv.k[0].shape
        self.page_shape = (len(kv.k), num_kv_heads, page_size, head_dim)  # one page over all layers
        local_shape = self.moved_sharding.shard_shape((num_host_pages, *self.page_shape))
        self.devices = sorted(self.moved_sharding.addressable_devices, key=lambda d: d.id)
        self.store_k = {device: np.zeros(local_shape, kv.k[0].dtype) for device in self.devices}
        self.store_v = {device: np.zeros(local_shape, kv.k[0].dtype) for device in self.devices}
        self.buckets = [1]
        while self.buckets[-1] < max_pages_per_request:
            self.buckets.append(self.buckets[-1] * 2)
        self._gather = jax.jit(_gather, in_shardings=(pages, pages, ids), out_shardings=self.moved_sharding)
        self._scatter = jax.jit(
            _scatter,
            in_shardings=(pages, pages, self.moved_sharding, self.moved_sharding, ids),
            out_shardings=pages,
            donate_argnums=(0, 1),
        )
        # copies in flight: (host ids, each device's K shard, each device's V shard)
        self._pending: list[tuple[np.ndarray, list[jax.Array], list[jax.Array]]] = []

    @property
    def nbytes(self) -> int:
        """Host memory of this process's stores (all host pages, allocated up front)."""
        return sum(store.nbytes for stores in (self.store_k, self.store_v) for store in stores.values())

    def _padded(self, ids: list[int]) -> np.ndarray:
        bucket = next(b for b in self.buckets if b >= len(ids))
        padded = np.zeros(bucket, np.int32)
        padded[: len(ids)] = ids
        return padded

    def swap_out(self, kv: KVPages, page_ids: list[int], host_page_ids: list[int]) -> None:
        """Copies device ``page_ids`` into host ``host_page_ids``; the device pages may be reused at once."""
        if len(page_ids) != len(host_page_ids):
            raise ValueError(f"swap-out of {len(page_ids)} device pages into {len(host_page_ids)} host pages")
        k, v = self._gather(kv.k, kv.v, self._padded(page_ids))
        k_shards, v_shards = self._local_shards(k), self._local_shards(v)
        for shard in (*k_shards, *v_shards):
            shard.copy_to_host_async()
        self._pending.append((np.asarray(host_page_ids, np.int64), k_shards, v_shards))

    def _local_shards(self, moved: jax.Array) -> list[jax.Array]:
        """This process's shards of gathered pages, in ``self.devices`` order."""
        by_device = {shard.device: shard.data for shard in moved.addressable_shards}
        return [by_device[device] for device in self.devices]

    def flush(self) -> None:
        """Lands every swap-out issued so far in the stores (in issue order; waits for copies in flight)."""
        for host_ids, k_shards, v_shards in self._pending:
            for device, k, v in zip(self.devices, k_shards, v_shards):
                self.store_k[device][host_ids] = np.asarray(k)[: len(host_ids)]
                self.store_v[device][host_ids] = np.asarray(v)[: len(host_ids)]
        self._pending.clear()

    def swap_in(self, kv: KVPages, host_page_ids: list[int], page_ids: list[int]) -> None:
        """Writes host ``host_page_ids`` into device ``page_ids`` of ``kv``, in place."""
        if len(page_ids) != len(host_page_ids):
            raise ValueError(f"swap-in of {len(host_page_ids)} host pages into {len(page_ids)} device pages")
        if any(np.isin(ids, host_page_ids).any() for ids, _, _ in self._pending):
            self.flush()  # a copy still in flight lands in a page read here
        host_ids = self._padded(host_page_ids)
        pages = [store[device][host_ids] for store in (self.store_k, self.store_v) for device in self.devices]
        on_devices = jax.device_put(pages, self.devices * 2)
        shape = (len(host_ids), *self.page_shape)
        k, v = (
            jax.make_array_from_single_device_arrays(shape, self.moved_sharding, part)
            for part in (on_devices[: len(self.devices)], on_devices[len(self.devices) :])
        )
        kv.k, kv.v = self._scatter(kv.k, kv.v, k, v, self._padded(page_ids))

    def warmup(self, kv: KVPages) -> None:
        """Compiles every bucket: a round trip of padding pages (device and host page 0 onto themselves)."""
        for bucket in self.buckets:
            self.swap_out(kv, [0] * bucket, [0] * bucket)
            self.swap_in(kv, [0] * bucket, [0] * bucket)
        jax.block_until_ready(kv.k)

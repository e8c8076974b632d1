"""Tensor parallelism over a one-axis mesh ``("tp",)``: how params and KV pages are split, and the kernels wrapped.

Megatron-style: every layer's q/k/v and gate/up projections are split by columns (each device computes its
own heads and its slice of the MLP), ``wo`` and ``w_down`` by rows (each device's partial sum, then one
all-reduce each: two per layer). The rule table ``PARAM_RULES`` names each param's ``PartitionSpec``:

- ``wqkv``/``bqkv``/``w_gate_up``: columns. The fused columns are ``[q heads | k heads | v heads]`` and
  ``[gate | up]``; split as they are, device 0 would get q heads only. ``shard_params`` therefore permutes
  them once, at sharding time, so that device i's column block is ``[q_i | k_i | v_i]`` / ``[gate_i | up_i]``,
  and the model reads the fused output per shard (``llama.forward_paged(..., num_shards=tp)``).
- ``wo``/``w_down``: rows. ``embed [V, D]`` and ``lm_head [D, V]``: the vocabulary axis. It is the largest
  axis of the largest tables (V >> D), so each device holds 1/tp of them; the lookup costs one all-reduce of
  ``[T, D]`` and the logits one all-gather of ``[R, V]`` before sampling, where the hidden axis would cost an
  all-reduce of the ``[R, V]`` partial logits (twice the bytes). A vocabulary that tp does not divide leaves
  both tables replicated. Norms are replicated.
- ``quantize.Int8Weight``: the values follow the rule; the per-output-channel scale follows it on the axes
  where the scale is not of size 1 (split with columns and vocabulary rows, replicated under a row split).

KV pages ``[K, P, S, H]`` are split over the kv-head axis. With fewer kv heads than devices (K < tp, tp a
multiple of K), each kv head is replicated on tp / K devices: its k/v projection columns are repeated
tp / K times and the pages hold tp kv heads, one per device (``sharded_model_config``), so that every device
keeps only the heads its query heads read. The attention kernels run under ``shard_map`` per head shard,
unchanged inside (``attention_over_heads``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lamps_jax.config import ModelConfig
from lamps_jax.model.llama import Params
from lamps_jax.model.quantize import Int8Weight

TP = "tp"

PARAM_RULES: dict[str, PartitionSpec] = {
    "wqkv": PartitionSpec(None, TP),
    "bqkv": PartitionSpec(TP),
    "w_gate_up": PartitionSpec(None, TP),
    "wo": PartitionSpec(TP, None),
    "w_down": PartitionSpec(TP, None),
    "embed": PartitionSpec(TP, None),
    "lm_head": PartitionSpec(None, TP),
    "attn_norm": PartitionSpec(),
    "mlp_norm": PartitionSpec(),
    "final_norm": PartitionSpec(),
}
VOCAB_PARAMS = ("embed", "lm_head")
KV_PAGES = PartitionSpec(TP)  # [K, P, S, H] split over kv heads
HEADS = PartitionSpec(None, None, TP, None)  # q and attention outputs [R, Q, N, H] split over heads


def make_mesh(tensor_parallel: int, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The ``("tp",)`` mesh over the first ``tensor_parallel`` devices (all processes' devices, in JAX's order)."""
    devices = list(jax.devices() if devices is None else devices)
    if tensor_parallel > len(devices):
        raise ValueError(f"tensor_parallel={tensor_parallel} needs {tensor_parallel} devices; JAX sees {len(devices)}")
    return Mesh(np.array(devices[:tensor_parallel]), (TP,))


def sharded_model_config(cfg: ModelConfig, tensor_parallel: int) -> ModelConfig:
    """The config the sharded params and KV pages follow: K < tp kv heads become tp (each repeated tp / K times)."""
    return cfg.replace(num_kv_heads=cfg.kv_heads_per_device(tensor_parallel) * tensor_parallel)


def vocab_is_sharded(cfg: ModelConfig, tensor_parallel: int) -> bool:
    return cfg.vocab_size % tensor_parallel == 0


def param_spec(name: str, cfg: ModelConfig, tensor_parallel: int) -> PartitionSpec:
    if name not in PARAM_RULES:
        raise ValueError(f"no sharding rule for param {name!r}; rules: {', '.join(PARAM_RULES)}")
    if name in VOCAB_PARAMS and not vocab_is_sharded(cfg, tensor_parallel):
        return PartitionSpec()
    return PARAM_RULES[name]


def _on_columns(w, fn: Callable[[np.ndarray], np.ndarray]):
    """``fn`` applied to the last (output) axis of a float array, or to both parts of an ``Int8Weight``."""
    if isinstance(w, Int8Weight):
        return type(w)(fn(np.asarray(w.values)), fn(np.asarray(w.scale)))
    return fn(np.asarray(w))


def _shard_major(parts: list[np.ndarray], num_shards: int) -> np.ndarray:
    """Columns of ``parts`` (each cut into ``num_shards`` blocks) in shard order: [a_0 | b_0 | a_1 | b_1 | ...]."""
    blocks = [np.split(part, num_shards, axis=-1) for part in parts]
    return np.concatenate([b[i] for i in range(num_shards) for b in blocks], axis=-1)


def _repeat_heads(x: np.ndarray, num_heads: int, repeats: int) -> np.ndarray:
    """Columns [..., num_heads * H] with each head's H columns repeated ``repeats`` times in place."""
    heads = x.reshape(*x.shape[:-1], num_heads, -1)
    return np.repeat(heads, repeats, axis=-2).reshape(*x.shape[:-1], -1)


def _qkv_columns(w: np.ndarray, cfg: ModelConfig, tensor_parallel: int) -> np.ndarray:
    """[q | k | v] columns -> [q_i | k_i | v_i] per shard i, each kv head repeated tp / K times when K < tp."""
    q_width, kv_width = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    q, k, v = np.split(w, [q_width, q_width + kv_width], axis=-1)
    repeats = sharded_model_config(cfg, tensor_parallel).num_kv_heads // cfg.num_kv_heads
    k, v = _repeat_heads(k, cfg.num_kv_heads, repeats), _repeat_heads(v, cfg.num_kv_heads, repeats)
    return _shard_major([q, k, v], tensor_parallel)


def shard_layout(params: Params, cfg: ModelConfig, tensor_parallel: int) -> Params:
    """The params with their fused columns in per-shard order (host numpy arrays), ready to be split."""
    qkv = functools.partial(_qkv_columns, cfg=cfg, tensor_parallel=tensor_parallel)

    def gate_up(w: np.ndarray) -> np.ndarray:
        return _shard_major(np.split(w, 2, axis=-1), tensor_parallel)

    layers = []
    for layer in params["layers"]:
        laid_out = dict(layer, wqkv=_on_columns(layer["wqkv"], qkv), w_gate_up=_on_columns(layer["w_gate_up"], gate_up))
        if "bqkv" in layer:
            laid_out["bqkv"] = _on_columns(layer["bqkv"], qkv)
        layers.append(laid_out)
    return params | {"layers": layers}


def _sharding(mesh: Mesh, spec: PartitionSpec, w) -> NamedSharding | Int8Weight:
    if not isinstance(w, Int8Weight):
        return NamedSharding(mesh, spec)
    scale_spec = PartitionSpec(*(axis if size > 1 else None for axis, size in zip(spec, w.scale.shape)))
    return type(w)(NamedSharding(mesh, spec), NamedSharding(mesh, scale_spec))


def param_shardings(params: Params, cfg: ModelConfig, mesh: Mesh) -> Params:
    """A pytree like ``params`` of ``NamedSharding`` (an ``Int8Weight`` of two for int8), by ``PARAM_RULES``."""
    tp = mesh.shape[TP]

    def shardings(tree: dict) -> dict:
        return {name: _sharding(mesh, param_spec(name, cfg, tp), w) for name, w in tree.items() if name != "layers"}

    return shardings(params) | {"layers": [shardings(layer) for layer in params["layers"]]}


def shard_params(params: Params, cfg: ModelConfig, mesh: Mesh) -> Params:
    """``params`` (the model's layout, ``cfg`` its config) permuted and split over ``mesh``.

    Every process passes the whole params and keeps the shards of its own devices.
    """
    laid_out = shard_layout(params, cfg, mesh.shape[TP])

    def put(w, sharding: NamedSharding) -> jax.Array:
        host = np.asarray(w)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, laid_out, param_shardings(laid_out, cfg, mesh))


def _shard_map(f: Callable, mesh: Mesh, in_specs, out_specs) -> Callable:
    """``jax.shard_map`` (JAX >= 0.7), or the experimental one of older JAX; no replication checks (Pallas calls)."""
    if hasattr(jax, "shard_map"):
        return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    from jax.experimental.shard_map import shard_map

    return shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)


def attention_over_heads(attention: Callable, mesh: Mesh) -> Callable:
    """``attention`` (the contract of ``reference.paged_attention``) run per head shard: each device attends
    its query heads over its kv heads' pages; page tables and lengths are replicated."""
    replicated = PartitionSpec()

    def sharded(q, k_pages, v_pages, page_table, q_start, context_lens, num_kv_blocks, pages_per_block):
        def local(q, k_pages, v_pages, page_table, q_start, context_lens, num_kv_blocks):
            return attention(q, k_pages, v_pages, page_table, q_start, context_lens, num_kv_blocks, pages_per_block)

        in_specs = (HEADS, KV_PAGES, KV_PAGES, replicated, replicated, replicated, replicated)
        return _shard_map(local, mesh, in_specs, HEADS)(
            q, k_pages, v_pages, page_table, q_start, context_lens, num_kv_blocks
        )

    return sharded


def shard_model(cfg: ModelConfig, params: Params, tensor_parallel: int) -> tuple[Mesh, ModelConfig, Params]:
    """(mesh, the config of the sharded layout, sharded params) for ``tensor_parallel`` devices.

    A multi-process run needs the mesh to span every process's devices: ``tensor_parallel`` equals them all.
    """
    cfg.check_tensor_parallel(tensor_parallel)
    if jax.process_count() > 1 and tensor_parallel != jax.device_count():
        raise ValueError(
            f"a run over {jax.process_count()} processes needs tensor_parallel = all their devices "
            f"({jax.device_count()}), got {tensor_parallel}"
        )
    mesh = make_mesh(tensor_parallel)
    return mesh, sharded_model_config(cfg, tensor_parallel), shard_params(params, cfg, mesh)


def gathered_logits(logits: jax.Array, mesh: Mesh) -> jax.Array:
    """Logits [R, V] computed split over the vocabulary (each device against its own rows of the table),
    then all-gathered for sampling; unconstrained, XLA may all-gather the whole table instead."""
    if logits.shape[-1] % mesh.shape[TP] == 0:
        logits = jax.lax.with_sharding_constraint(logits, NamedSharding(mesh, PartitionSpec(None, TP)))
    return jax.lax.with_sharding_constraint(logits, NamedSharding(mesh, PartitionSpec()))


def split_over_kv_heads(pages: list[jax.Array], mesh: Mesh) -> list[jax.Array]:
    """KV page arrays kept split over their kv-head axis (inside a jitted step)."""
    return [jax.lax.with_sharding_constraint(x, NamedSharding(mesh, KV_PAGES)) for x in pages]

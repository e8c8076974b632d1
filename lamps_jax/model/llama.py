"""Llama-family decoder as pure functions over a params pytree.

Covers Llama 2/3, Mistral, Qwen2/2.5 and SmolLM2: RMSNorm, RoPE (theta, linear or llama3 scaling),
grouped-query attention, SwiGLU, optional q/k/v bias, tied or untied embeddings.

Params pytree (one dict per layer, so each layer's weights feed its matmuls without a copy)::

    embed [V, D]; final_norm [D]; lm_head [D, V] (absent when tied)
    layers: list of {attn_norm [D], wqkv [D, (N+2K)*H] (q | k | v columns), (bqkv [(N+2K)*H]),
                     wo [N*H, D], mlp_norm [D], w_gate_up [D, 2F] (gate | up columns), w_down [F, D]}

Any matrix (not norms or biases) may instead be a ``quantize.Int8Weight``: int8 values with
per-output-channel float32 scales (``quantize.quantize_params``); activations stay float32.
One matmul for q/k/v and one for gate/up: fewer, larger dots than five separate ones.

The layer loop is unrolled in Python: on CPU a ``lax.scan`` over stacked weights materialises a
copy of every layer's weights per step (measured 1.6x slower decode for SmolLM2 at batch 1).

Two entry points: ``forward_paged`` (the serving step: writes this step's K/V into the page
arrays and returns last-token logits per row) and ``forward_dense`` (no cache; an oracle).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from lamps_jax.config import ModelConfig
from lamps_jax.model.quantize import matmul, matmul_rows, take_rows
from lamps_jax.model.step_inputs import StepInputs
from lamps_jax.pallas_kernels.reference import dense_causal_attention, paged_attention

Params = dict


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (x32 * weight.astype(jnp.float32)).astype(x.dtype)


def rope_inv_freq(cfg: ModelConfig) -> jax.Array:
    """Inverse frequencies [H/2] after the config's RoPE scaling."""
    half = cfg.head_dim // 2
    inv_freq = 1.0 / (cfg.rope_theta ** (jnp.arange(half, dtype=jnp.float32) * 2 / cfg.head_dim))
    scaling = cfg.rope_scaling
    if scaling.rope_type == "linear":
        inv_freq = inv_freq / scaling.factor
    elif scaling.rope_type == "llama3":
        old_len = scaling.original_max_position_embeddings
        low_wavelen = old_len / scaling.low_freq_factor
        high_wavelen = old_len / scaling.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        smooth = (old_len / wavelen - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor)
        smoothed = (1 - smooth) * inv_freq / scaling.factor + smooth * inv_freq
        inv_freq = jnp.where(
            wavelen > low_wavelen,
            inv_freq / scaling.factor,
            jnp.where(wavelen < high_wavelen, inv_freq, smoothed),
        )
    return inv_freq


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
    """HF-style rotate-half RoPE. x [..., T, heads, H], positions [..., T]."""
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [..., T, H/2]
    cos = jnp.cos(angles)[..., None, :]
    sin = jnp.sin(angles)[..., None, :]
    x32 = x.astype(jnp.float32)
    x1, x2 = jnp.split(x32, 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def _qkv(layer: Params, h: jax.Array, cfg: ModelConfig, num_shards: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Heads [..., N, H], [..., K, H], [..., K, H]. Split params (``num_shards`` > 1) hold the fused columns
    as [q_i | k_i | v_i] per shard i: each shard's block is cut on its own, so no column leaves its device."""
    qkv = matmul(h, layer["wqkv"])  # [..., (N+2K)*H]
    if cfg.attention_bias:
        qkv = qkv + layer["bqkv"]
    n, k = cfg.num_heads // num_shards, cfg.num_kv_heads // num_shards
    if num_shards == 1:
        qkv = qkv.reshape(*h.shape[:-1], n + 2 * k, cfg.head_dim)
        return qkv[..., :n, :], qkv[..., n : n + k, :], qkv[..., n + k :, :]
    qkv = qkv.reshape(*h.shape[:-1], num_shards, n + 2 * k, cfg.head_dim)

    def heads(first: int, last: int) -> jax.Array:
        return qkv[..., first:last, :].reshape(*h.shape[:-1], num_shards * (last - first), cfg.head_dim)

    return heads(0, n), heads(n, n + k), heads(n + k, n + 2 * k)


def _mlp(layer: Params, x: jax.Array, cfg: ModelConfig, num_shards: int) -> jax.Array:
    h = rms_norm(x, layer["mlp_norm"], cfg.rms_norm_eps)
    gate_up = matmul(h, layer["w_gate_up"])  # [..., 2F]; [gate_i | up_i] per shard i when split
    width = cfg.intermediate_size // num_shards
    if num_shards == 1:
        gate, up = gate_up[..., :width], gate_up[..., width:]
    else:
        gate_up = gate_up.reshape(*h.shape[:-1], num_shards, 2 * width)
        gate = gate_up[..., :width].reshape(*h.shape[:-1], cfg.intermediate_size)
        up = gate_up[..., width:].reshape(*h.shape[:-1], cfg.intermediate_size)
    return matmul(jax.nn.silu(gate) * up, layer["w_down"])


def _logits(params: Params, h: jax.Array, cfg: ModelConfig) -> jax.Array:
    h = rms_norm(h, params["final_norm"], cfg.rms_norm_eps)
    if "lm_head" in params:  # untied, or a tied int8 embedding's packed copy (packed_int8.py)
        return matmul(h, params["lm_head"]).astype(jnp.float32)
    return matmul_rows(h, params["embed"]).astype(jnp.float32)  # tied: against embed [V, D], no transposed copy


def _decoder(
    params: Params, x: jax.Array, positions: jax.Array, cfg: ModelConfig, attend: Callable, num_shards: int = 1
) -> jax.Array:
    """Runs the layer stack; ``attend(layer_idx, q, k, v) -> out`` owns the KV of each layer. ``num_shards``:
    the tensor-parallel shards the fused projections' columns are ordered by (``sharding.shard_layout``)."""
    inv_freq = rope_inv_freq(cfg)
    scale = 1.0 / math.sqrt(cfg.head_dim)
    for layer_idx, layer in enumerate(params["layers"]):
        h = rms_norm(x, layer["attn_norm"], cfg.rms_norm_eps)
        q, k, v = _qkv(layer, h, cfg, num_shards)
        q = apply_rope(q, positions, inv_freq) * jnp.asarray(scale, q.dtype)
        k = apply_rope(k, positions, inv_freq)
        out = attend(layer_idx, q, k, v)
        x = x + matmul(out.reshape(*x.shape[:-1], -1), layer["wo"])
        x = x + _mlp(layer, x, cfg, num_shards)
    return x


def forward_paged(
    params: Params,
    k_pages: list[jax.Array],  # per layer [K, P, S, H]
    v_pages: list[jax.Array],  # per layer [K, P, S, H]
    inputs: StepInputs,
    cfg: ModelConfig,
    pages_per_block: int,
    attention: Callable = paged_attention,
    return_hidden: bool = False,
    num_shards: int = 1,
) -> tuple[jax.Array, ...]:
    """One serving step: returns logits [R, V] of each row's last valid token and the new pages.

    ``attention`` has the contract of ``pallas_kernels.reference.paged_attention``. With ``return_hidden``
    it returns (logits, hidden [R, D], k, v): ``hidden`` is the final-norm hidden state of each row's last
    valid token, the input of the LM head (what a length predictor reads). ``num_shards``: the tensor-parallel
    degree the params were laid out for (``model/sharding.py``), 1 for unsharded params.
    """
    num_rows, num_q = inputs.token_ids.shape
    page_size = k_pages[0].shape[2]
    offsets = jnp.arange(num_q, dtype=jnp.int32)
    positions = inputs.q_start[:, None] + offsets[None, :]  # [R, Q]
    valid = offsets[None, :] < inputs.num_valid[:, None]
    page_col = jnp.clip(positions // page_size, 0, inputs.page_table.shape[1] - 1)
    write_pages = jnp.where(valid, jnp.take_along_axis(inputs.page_table, page_col, 1), 0).ravel()
    write_offsets = (positions % page_size).ravel()
    context_lens = inputs.q_start + inputs.num_valid

    new_k, new_v = [], []

    def write(pages: jax.Array, kv: jax.Array) -> jax.Array:  # kv [R, Q, K, H] -> pages [K, P, S, H]
        flat = jnp.swapaxes(kv.reshape(num_rows * num_q, *kv.shape[2:]), 0, 1)  # [K, R*Q, H]
        return pages.at[:, write_pages, write_offsets].set(flat.astype(pages.dtype))

    def attend(layer_idx, q, k, v):
        new_k.append(write(k_pages[layer_idx], k))
        new_v.append(write(v_pages[layer_idx], v))
        return attention(
            q,
            new_k[-1],
            new_v[-1],
            inputs.page_table,
            inputs.q_start,
            context_lens,
            inputs.num_kv_blocks,
            pages_per_block,
        )

    x = _decoder(params, take_rows(params["embed"], inputs.token_ids), positions, cfg, attend, num_shards)
    last = jnp.clip(inputs.num_valid - 1, 0, num_q - 1)
    h_last = jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]  # [R, D]
    if return_hidden:
        return _logits(params, h_last, cfg), rms_norm(h_last, params["final_norm"], cfg.rms_norm_eps), new_k, new_v
    return _logits(params, h_last, cfg), new_k, new_v


def forward_dense(params: Params, token_ids: jax.Array, cfg: ModelConfig) -> jax.Array:
    """Logits [T, V] for one sequence without a cache (the oracle for the paged path)."""
    positions = jnp.arange(token_ids.shape[0], dtype=jnp.int32)

    def attend(layer_idx, q, k, v):
        return dense_causal_attention(q, k, v)

    x = _decoder(params, take_rows(params["embed"], token_ids), positions, cfg, attend)
    return _logits(params, x, cfg)

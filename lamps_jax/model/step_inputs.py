"""The device-side description of one serving step (a pytree of arrays, no Python values).

A step is a set of query rows; each row is Q consecutive tokens of one sequence (Q = 1 for decodes,
Q = the engine's query block for prefill chunks). Padding rows and padding tokens have
``num_valid`` 0 / beyond ``num_valid`` and write their K/V to page 0, the reserved padding page.
"""

from __future__ import annotations

import dataclasses

import jax


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StepInputs:
    token_ids: jax.Array  # [R, Q] int32 tokens of each row
    q_start: jax.Array  # [R] int32 position of each row's first token
    num_valid: jax.Array  # [R] int32 real tokens in each row (0 for padding rows)
    page_table: jax.Array  # [R, W] int32 the row's sequence pages, padded with page 0
    num_kv_blocks: jax.Array  # [] int32 KV blocks the attention walks this step


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SamplingInputs:
    temperature: jax.Array  # [R] float32, 0 = greedy
    top_k: jax.Array  # [R] int32, 0 = no limit
    top_p: jax.Array  # [R] float32, 1 = no limit
    seeds: jax.Array  # [R] uint32 per-request seed
    steps: jax.Array  # [R] int32 tokens generated so far (folded into the key)

"""On-device sampling: greedy, temperature, top-k and top-p with a per-request seed.

Each row's key is ``fold_in(PRNGKey(seed), step)``, so a request's tokens depend only on its own
seed and how many tokens it has generated, never on what else shares the batch. When every row is
greedy the sort-based path is skipped with ``lax.cond``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lamps_jax.model.step_inputs import SamplingInputs


def _sample_stochastic(logits: jax.Array, s: SamplingInputs) -> jax.Array:
    vocab = logits.shape[-1]
    scaled = logits / jnp.maximum(s.temperature, 1e-6)[:, None]
    sorted_desc = -jnp.sort(-scaled, axis=-1)
    k = jnp.where(s.top_k > 0, jnp.minimum(s.top_k, vocab), vocab)
    kth = jnp.take_along_axis(sorted_desc, (k - 1)[:, None], axis=-1)  # [R, 1]
    in_top_k = jnp.arange(vocab)[None, :] < k[:, None]
    probs = jax.nn.softmax(jnp.where(in_top_k, sorted_desc, -jnp.inf), axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    num_nucleus = jnp.maximum(jnp.sum(mass_before < s.top_p[:, None], axis=-1), 1)
    nucleus_min = jnp.take_along_axis(sorted_desc, (num_nucleus - 1)[:, None], axis=-1)
    threshold = jnp.maximum(kth, nucleus_min)
    masked = jnp.where(scaled >= threshold, scaled, -jnp.inf)
    keys = jax.vmap(lambda seed, step: jax.random.fold_in(jax.random.PRNGKey(seed), step))(s.seeds, s.steps)
    return jax.vmap(jax.random.categorical)(keys, masked)


def sample(logits: jax.Array, s: SamplingInputs) -> jax.Array:
    """logits [R, V] float32 -> token ids [R] int32."""
    greedy = jnp.argmax(logits, axis=-1)
    sampled = jax.lax.cond(
        jnp.any(s.temperature > 0),
        lambda: _sample_stochastic(logits, s),
        lambda: greedy,
    )
    return jnp.where(s.temperature > 0, sampled, greedy).astype(jnp.int32)

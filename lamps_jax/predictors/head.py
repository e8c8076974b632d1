"""The length head: a flax module from a segment's starting hidden state [D] to its predicted length.

Two kinds (``HeadSpec.kind``): ``bins``, the paper's setup (LAMPS's OPT-125M classifier), logits over
``NUM_BINS`` bins of ``BIN_TOKENS`` tokens (the last bin holds every longer length), read out as the
expected length under the softmax; and ``log``, a regression of log(1 + length). Either is linear
(``hidden_size`` 0) or a 2-layer MLP. Features are standardized with the training set's mean and scale,
kept in the parameter tree: ``{"head": flax params, "feature_mean": [D], "feature_scale": [D]}``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

NUM_BINS = 50
BIN_TOKENS = 10
HEAD_KINDS = ("bins", "log")


@dataclass(frozen=True)
class HeadSpec:
    kind: str = "bins"  # bins | log
    hidden_size: int = 0  # 0: linear; else one hidden layer of this width (GELU)
    input_size: int = 576  # the serving model's hidden size D

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise ValueError(f"head kind must be one of {', '.join(HEAD_KINDS)}, got {self.kind!r}")
        if self.hidden_size < 0 or self.input_size < 1:
            raise ValueError(f"hidden_size must be >= 0 and input_size >= 1, got {self.hidden_size}, {self.input_size}")

    def to_json(self) -> dict:
        return asdict(self)


class LengthHead(nn.Module):
    spec: HeadSpec

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:  # [B, D] standardized -> [B, NUM_BINS] or [B]
        x = features
        if self.spec.hidden_size:
            x = nn.gelu(nn.Dense(self.spec.hidden_size, name="hidden")(x))
        if self.spec.kind == "bins":
            return nn.Dense(NUM_BINS, name="bins")(x)
        return nn.Dense(1, name="log_length")(x)[:, 0]


def length_bin(num_tokens: np.ndarray | jax.Array) -> np.ndarray | jax.Array:
    """The bin of each length: [0, 10) -> 0, ..., [490, inf) -> 49."""
    return (num_tokens // BIN_TOKENS).clip(0, NUM_BINS - 1)


BIN_CENTERS = (np.arange(NUM_BINS, dtype=np.float32) + 0.5) * BIN_TOKENS


def init_params(spec: HeadSpec, features: np.ndarray, lengths: np.ndarray | None = None, seed: int = 0) -> dict:
    """Fresh parameters, standardized for ``features`` [N, D] (the training set). With the training ``lengths``
    the output bias starts at their prior (log bin frequencies, or the mean log-length), so training spends
    its steps on what the hidden state adds rather than on the average."""
    head = LengthHead(spec).init(jax.random.PRNGKey(seed), jnp.zeros((1, spec.input_size), jnp.float32))["params"]
    if lengths is not None:
        head = jax.tree.map(lambda x: x, head)  # a copy whose output bias can be replaced
        if spec.kind == "bins":
            counts = np.bincount(length_bin(np.asarray(lengths)), minlength=NUM_BINS) + 1.0
            head["bins"]["bias"] = jnp.asarray(np.log(counts / counts.sum()), jnp.float32)
        else:
            head["log_length"]["bias"] = jnp.full((1,), np.log1p(np.asarray(lengths)).mean(), jnp.float32)
    mean = features.mean(axis=0)
    scale = 1.0 / np.maximum(features.std(axis=0), 1e-6)
    return {"head": head, "feature_mean": jnp.asarray(mean, jnp.float32), "feature_scale": jnp.asarray(scale)}


def head_outputs(spec: HeadSpec, params: dict, hidden: jax.Array) -> jax.Array:
    """Raw outputs (bin logits [B, NUM_BINS] or log-lengths [B]) for hidden states [B, D]."""
    features = (hidden.astype(jnp.float32) - params["feature_mean"]) * params["feature_scale"]
    return LengthHead(spec).apply({"params": params["head"]}, features)


def outputs_to_tokens(spec: HeadSpec, outputs: jax.Array) -> jax.Array:
    """Predicted lengths [B]: the expected bin center under the softmax, or exp(log-length) - 1 (at most 500)."""
    if spec.kind == "bins":
        return jax.nn.softmax(outputs, axis=-1) @ jnp.asarray(BIN_CENTERS)
    return jnp.expm1(jnp.clip(outputs, 0.0, np.log1p(NUM_BINS * BIN_TOKENS)))  # within the bins' range


def predicted_bins(spec: HeadSpec, outputs: jax.Array) -> jax.Array:
    """The bin each prediction falls in (argmax for the classifier)."""
    if spec.kind == "bins":
        return jnp.argmax(outputs, axis=-1)
    return length_bin(outputs_to_tokens(spec, outputs).astype(jnp.int32))


def predict_tokens(spec: HeadSpec, params: dict, hidden: jax.Array) -> jax.Array:
    return outputs_to_tokens(spec, head_outputs(spec, params, hidden))

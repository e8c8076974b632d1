"""Which model a length head was trained for: a digest of its shape and a fingerprint of its weights.

The hidden states a head reads are only meaningful for the model that produced them: a head is saved
with ``model_identity`` of that model and refuses to load against any other (``check_same_model``).
The numeric dtype is left out (a head trained on float32 states serves the bfloat16 model too), and the
fingerprint (a few final-norm and embedding values) is compared with a tolerance that bfloat16 passes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np

from lamps_jax.config import ModelConfig
from lamps_jax.model.quantize import Int8Weight

FINGERPRINT_VALUES = 8  # values taken from the final norm and from one embedding row each
FINGERPRINT_RTOL = 2e-2  # bfloat16 keeps ~3 significant digits
FINGERPRINT_ATOL = 1e-3


class ModelMismatchError(ValueError):
    """A length head was trained on another model's hidden states."""


def _row(weight, index: int) -> np.ndarray:
    """Row ``index`` of a matrix (an int8 one dequantized) as float32."""
    if isinstance(weight, Int8Weight):
        scale = np.asarray(weight.scale, np.float32)
        return np.asarray(weight.values[index], np.float32) * scale[min(index, scale.shape[0] - 1)]
    return np.asarray(weight[index], np.float32)


def model_identity(name: str, config: ModelConfig, params: dict) -> dict:
    """JSON-able identity: the model's name (for messages), a digest of its config, a weight fingerprint."""
    shape = {k: v for k, v in dataclasses.asdict(config).items() if k != "dtype"}
    digest = hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()[:16]
    norm = np.asarray(params["final_norm"], np.float32)[:FINGERPRINT_VALUES]
    embed_row = _row(params["embed"], 1)[:FINGERPRINT_VALUES]
    fingerprint = [round(float(v), 6) for v in np.concatenate([norm, embed_row])]
    return {"name": name, "config_sha256": digest, "hidden_size": config.hidden_size, "fingerprint": fingerprint}


def check_same_model(trained_for: dict, serving: dict, what: str) -> None:
    """Raises ``ModelMismatchError`` unless ``serving`` is the model ``trained_for`` describes."""
    same_shape = trained_for.get("config_sha256") == serving["config_sha256"]
    same_weights = same_shape and np.allclose(
        trained_for.get("fingerprint", []), serving["fingerprint"], rtol=FINGERPRINT_RTOL, atol=FINGERPRINT_ATOL
    )
    if not same_weights:
        why = "a different architecture" if not same_shape else "the same architecture with different weights"
        raise ModelMismatchError(
            f"{what} was trained on the hidden states of model {trained_for.get('name')!r} "
            f"(config {trained_for.get('config_sha256')}), but this model, {serving['name']!r} "
            f"(config {serving['config_sha256']}), is {why}: collect lengths and train a head for it "
            "(lamps-jax collect-lengths, lamps-jax train-predictor)"
        )

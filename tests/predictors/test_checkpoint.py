"""A head saved with orbax restores to identical predictions, and refuses a model it was not trained for."""

from __future__ import annotations

import numpy as np
import pytest

from lamps_jax.model.registry import load_model
from lamps_jax.predictors.checkpoint import TrainedHead, load_head, read_meta, save_head
from lamps_jax.predictors.head import HeadSpec, init_params, predict_tokens
from lamps_jax.predictors.identity import ModelMismatchError, check_same_model, model_identity


def random_head(tiny_model, kind: str) -> TrainedHead:
    rng = np.random.default_rng(0)
    features = rng.standard_normal((32, tiny_model.config.hidden_size)).astype(np.float32)
    spec = HeadSpec(kind, hidden_size=8, input_size=tiny_model.config.hidden_size)
    params = init_params(spec, features, rng.integers(1, 400, 32), seed=1)
    identity = model_identity("tiny", tiny_model.config, tiny_model.params)
    return TrainedHead(spec, params, identity, 123.0, {"note": "random"})


@pytest.mark.parametrize("kind", ["bins", "log"])
def test_round_trip_gives_identical_predictions(tiny_model, tmp_path, kind: str) -> None:
    head = random_head(tiny_model, kind)
    path = save_head(head, tmp_path / "head")
    restored = load_head(path, model_identity("tiny", tiny_model.config, tiny_model.params))
    hidden = np.random.default_rng(1).standard_normal((5, tiny_model.config.hidden_size)).astype(np.float32)
    assert restored.spec == head.spec and restored.mean_tokens == 123.0 and restored.summary == {"note": "random"}
    np.testing.assert_array_equal(
        np.asarray(predict_tokens(head.spec, head.params, hidden)),
        np.asarray(predict_tokens(restored.spec, restored.params, hidden)),
    )
    assert read_meta(path)["model"]["name"] == "tiny"


def test_loading_for_another_model_is_a_clear_error(tiny_model, tmp_path) -> None:
    path = save_head(random_head(tiny_model, "bins"), tmp_path / "head")
    other_weights = load_model("tiny", seed=1)  # same architecture, other weights
    with pytest.raises(ModelMismatchError, match="same architecture with different weights"):
        load_head(path, model_identity("tiny-seed-1", other_weights.config, other_weights.params))
    wider = other_weights.config.replace(num_layers=2)
    with pytest.raises(ModelMismatchError, match=r"hidden states of model 'tiny'.*a different architecture"):
        load_head(path, model_identity("tiny-2-layers", wider, other_weights.params))


def test_bfloat16_weights_are_the_same_model(tiny_model) -> None:
    bf16 = load_model("tiny", dtype="bfloat16", seed=0)
    identity = model_identity("tiny", tiny_model.config, tiny_model.params)
    check_same_model(identity, model_identity("tiny", bf16.config, bf16.params), "a head")


def test_not_a_checkpoint(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not a length-head checkpoint"):
        load_head(tmp_path)

"""The training loop recovers a length that is a known function of the hidden state; the split keeps groups whole."""

from __future__ import annotations

import numpy as np
import pytest

from lamps_jax.predictors.evaluate import baseline_predictions, scores
from lamps_jax.predictors.head import HeadSpec
from lamps_jax.predictors.report import predict
from lamps_jax.predictors.train import TrainConfig, group_folds, train_head, train_validation_rows


def synthetic(num_rows: int = 1200, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hidden states whose answer length is 20 + 470 * sigmoid(w . x): known, smooth, spread over the bins."""
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((num_rows, dim)).astype(np.float32) * 3 + 1  # off-center: standardization matters
    w = rng.standard_normal(dim)
    z = (hidden - 1) @ w / (3 * np.linalg.norm(w))
    lengths = np.rint(20 + 470 / (1 + np.exp(-1.5 * z))).astype(np.int32)
    groups = np.array([f"g{i // 6}" for i in range(num_rows)])  # groups of 6
    return hidden, lengths, groups


@pytest.mark.parametrize("kind", ["bins", "log"])
def test_training_recovers_a_known_length_function(kind: str) -> None:
    hidden, lengths, groups = synthetic()
    test_rows = group_folds(groups, 6, seed=0)[0]
    train_rows, validation_rows = train_validation_rows(groups, np.setdiff1d(np.arange(len(groups)), test_rows), 0.2)
    spec = HeadSpec(kind, hidden_size=32, input_size=hidden.shape[1])
    config = TrainConfig(learning_rate=1e-2, warmup_steps=20, max_epochs=150, patience=20, batch_size=64)
    result = train_head(spec, hidden, lengths, train_rows, validation_rows, config)
    learned = scores(*predict(spec, result.params, hidden[test_rows]), lengths[test_rows])
    mean = baseline_predictions(lengths, np.zeros(len(lengths)), train_rows, test_rows)["global mean"]
    baseline_mae = np.abs(mean - lengths[test_rows]).mean()
    assert baseline_mae > 80
    # the classifier reads lengths through 10-token bins: within 2.5 bins; the regression within one bin
    assert learned["mae"] < (25 if kind == "bins" else 10)
    assert learned["spearman"] > (0.97 if kind == "bins" else 0.99)
    assert result.best_epoch > 0


def test_folds_and_validation_keep_groups_whole() -> None:
    _, _, groups = synthetic()
    folds = group_folds(groups, 5, seed=3)
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(groups)))
    assert all(not set(groups[a]) & set(groups[b]) for i, a in enumerate(folds) for b in folds[i + 1 :])
    train, validation = train_validation_rows(groups, np.concatenate(folds[1:]), 0.25, seed=1)
    assert not set(groups[train]) & set(groups[validation])
    assert len(set(groups[validation])) == 40  # a quarter of the 160 groups of the four folds
    with pytest.raises(ValueError, match="at least that many groups"):
        group_folds(groups[:12], 3)


def test_baselines_and_scores() -> None:
    lengths = np.array([10, 20, 300, 400, 15, 350])
    types = np.array(["a", "a", "b", "b", "a", "b"])
    base = baseline_predictions(lengths, types, np.arange(4), np.arange(4, 6))
    assert base["global mean"].tolist() == [182.5, 182.5]
    assert base["per-type mean"].tolist() == [15.0, 350.0]
    s = scores(base["per-type mean"], np.array([1, 35]), lengths[4:])
    assert s == pytest.approx({"mae": 0.0, "bin_accuracy": 1.0, "spearman": 1.0})
    assert np.isnan(scores(base["global mean"], np.array([18, 18]), lengths[4:])["spearman"])

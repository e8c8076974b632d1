"""Scoring length predictions on the held-out split: MAE, bin accuracy, Spearman rank correlation.

The head is compared with two baselines fitted on the training rows: the global mean length and the
mean length of the prompt's type (the type's training mean; the global mean for a type unseen in
training). A constant prediction has no rank order: its Spearman correlation is reported as NaN.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from lamps_jax.predictors.head import length_bin


def scores(predicted: np.ndarray, predicted_bins: np.ndarray, lengths: np.ndarray) -> dict[str, float]:
    """MAE (tokens), bin accuracy (share in the true 10-token bin), Spearman correlation of predicted vs true."""
    predicted = np.asarray(predicted, np.float64)
    constant = np.ptp(predicted) == 0
    rho = float("nan") if constant else float(spearmanr(predicted, lengths).statistic)
    return {
        "mae": float(np.abs(predicted - lengths).mean()),
        "bin_accuracy": float((np.asarray(predicted_bins) == length_bin(np.asarray(lengths))).mean()),
        "spearman": rho,
    }


def baseline_predictions(
    lengths: np.ndarray, types: np.ndarray, train_rows: np.ndarray, rows: np.ndarray
) -> dict[str, np.ndarray]:
    """Predictions for ``rows`` of the global-mean and per-type-mean baselines fitted on ``train_rows``."""
    global_mean = float(lengths[train_rows].mean())
    type_means = {t: float(lengths[train_rows][types[train_rows] == t].mean()) for t in np.unique(types[train_rows])}
    return {
        "global mean": np.full(len(rows), global_mean),
        "per-type mean": np.array([type_means.get(t, global_mean) for t in types[rows]]),
    }


def markdown_table(rows: dict[str, dict[str, float]], caption: str) -> str:
    """A captioned Markdown table: one line per predictor, MAE / bin accuracy / Spearman."""
    lines = [caption, "", "| predictor | MAE (tokens) | bin accuracy | Spearman ρ |", "|---|---|---|---|"]
    for name, s in rows.items():
        rho = "n/a (constant)" if np.isnan(s["spearman"]) else f"{s['spearman']:.3f}"
        lines.append(f"| {name} | {s['mae']:.1f} | {s['bin_accuracy']:.3f} | {rho} |")
    return "\n".join(lines) + "\n"

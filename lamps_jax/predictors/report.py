"""train-predictor: trains length heads on a dataset and scores them and the baselines on held-out groups.

With a few hundred prompts one held-out split is a handful of conversations, so the scores are
cross-validated by group: each of ``folds`` folds of whole groups is held out once, every head and
baseline is fitted on the other folds (heads early-stopped on a validation share of those groups), and
the held-out predictions of all folds are scored together. The head shape with the lowest mean
validation MAE (chosen without the held-out rows) is then trained on every group (a validation share kept
for early stopping) and saved with orbax, with the model identity the dataset was collected on.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from lamps_jax.predictors.checkpoint import TrainedHead, save_head
from lamps_jax.predictors.dataset import LengthDataset
from lamps_jax.predictors.evaluate import baseline_predictions, markdown_table, scores
from lamps_jax.predictors.head import (
    BIN_TOKENS,
    NUM_BINS,
    HeadSpec,
    head_outputs,
    length_bin,
    outputs_to_tokens,
    predicted_bins,
)
from lamps_jax.predictors.train import TrainConfig, group_folds, train_head, train_validation_rows


def head_name(spec: HeadSpec) -> str:
    shape = "linear" if spec.hidden_size == 0 else f"MLP {spec.hidden_size}"
    return f"head: {'50 bins' if spec.kind == 'bins' else 'log-length'}, {shape}"


def predict(spec: HeadSpec, params: dict, hidden: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(predicted lengths, predicted bins) for hidden states [N, D]."""
    outputs = head_outputs(spec, params, jnp.asarray(hidden, jnp.float32))
    return np.asarray(outputs_to_tokens(spec, outputs)), np.asarray(predicted_bins(spec, outputs))


def cross_validate(
    data: LengthDataset, specs: list[HeadSpec], config: TrainConfig, folds: int, validation: float
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, float]]:
    """Held-out (lengths, bins) per predictor for every row, and each head's mean validation MAE."""
    rows = np.arange(len(data))
    predicted = {name: np.zeros(len(data)) for name in ("global mean", "per-type mean")}
    bins = {name: np.zeros(len(data), np.int64) for name in predicted}
    validation_mae: dict[str, list[float]] = {}
    for fold, test_rows in enumerate(group_folds(data.groups, folds, config.seed)):
        rest = np.setdiff1d(rows, test_rows)
        for name, values in baseline_predictions(data.lengths, data.types, rest, test_rows).items():
            predicted[name][test_rows], bins[name][test_rows] = values, length_bin(values.astype(np.int64))
        train_rows, validation_rows = train_validation_rows(data.groups, rest, validation, config.seed + fold)
        for spec in specs:
            name = head_name(spec)
            result = train_head(spec, data.hidden, data.lengths, train_rows, validation_rows, config)
            val = predict(spec, result.params, data.hidden[validation_rows])
            validation_mae.setdefault(name, []).append(scores(*val, data.lengths[validation_rows])["mae"])
            predicted.setdefault(name, np.zeros(len(data)))
            bins.setdefault(name, np.zeros(len(data), np.int64))
            predicted[name][test_rows], bins[name][test_rows] = predict(spec, result.params, data.hidden[test_rows])
        print(f"fold {fold + 1}/{folds}: {len(test_rows)} held-out prompts scored")
    return predicted, bins, {name: float(np.mean(v)) for name, v in validation_mae.items()}


def train_and_report(
    dataset_stem: Path,
    head_shapes: list[tuple[str, int]],
    config: TrainConfig,
    folds: int,
    validation: float,
    output: Path,
) -> dict:
    """Cross-validated scores as a captioned table (printed, and written beside ``output``); saves the best head."""
    data = LengthDataset.load(dataset_stem)
    specs = [HeadSpec(kind, hidden_size, data.hidden.shape[1]) for kind, hidden_size in head_shapes]
    predicted, bins, validation_mae = cross_validate(data, specs, config, folds, validation)
    rows = {name: scores(predicted[name], bins[name], data.lengths) for name in predicted}
    rows["global mean"]["spearman"] = float("nan")  # constant within each fold: no rank order to score
    for name, mae in validation_mae.items():
        rows[name]["validation_mae"] = mae
    best_spec = min(specs, key=lambda spec: validation_mae[head_name(spec)])
    train_rows, validation_rows = train_validation_rows(data.groups, np.arange(len(data)), validation, config.seed)
    final = train_head(best_spec, data.hidden, data.lengths, train_rows, validation_rows, config, progress=True)
    model = data.meta["model"]
    settings = {
        "dataset": str(dataset_stem),
        "model": model.get("name"),
        "temperature": data.meta.get("temperature"),
        "max_tokens": data.meta.get("max_tokens"),
        "prompts": len(data),
        "capped": int(data.capped.sum()),
        "groups": len(np.unique(data.groups)),
        "cross-validation": f"{folds} folds of whole groups, validation share {validation}, seed {config.seed}",
        "bins": f"{NUM_BINS} x {BIN_TOKENS} tokens",
        "train": asdict(config),
        "saved": head_name(best_spec),
    }
    caption = (
        f"Length prediction on {len(data)} prompts, each scored by a predictor fitted without its group "
        f"({settings['model']}, answers sampled at temperature {settings['temperature']}, cap "
        f"{settings['max_tokens']} tokens). Settings: " + "; ".join(f"{k}: {v}" for k, v in settings.items())
    )
    table = markdown_table(rows, caption)
    print(table)
    head = TrainedHead(
        best_spec,
        final.params,
        model,
        float(data.lengths[train_rows].mean()),
        final.summary(config) | {"dataset": str(dataset_stem), "cross_validated_scores": rows[head_name(best_spec)]},
    )
    path = save_head(head, output)
    report = {"settings": settings, "scores": rows}
    md, js = output.with_name(output.name + ".md"), output.with_name(output.name + ".json")
    md.write_text(table)
    js.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(f"wrote the head ({head_name(best_spec)}) to {path}, the report to {md} and {js}")
    return report

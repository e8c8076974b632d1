"""Saving and restoring a length head with orbax, next to the identity of the model it was trained for.

A checkpoint is one orbax directory with two items: ``params`` (the head's parameter tree) and ``meta``
(JSON: the head's spec, the model identity, the training set's mean length, the training summary).
``load_head`` reads ``meta`` first and refuses a head trained for another model before reading params.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from lamps_jax.predictors.head import HeadSpec, init_params
from lamps_jax.predictors.identity import check_same_model


@dataclass
class TrainedHead:
    spec: HeadSpec
    params: dict  # init_params's tree
    model: dict  # identity.model_identity of the model whose hidden states it reads
    mean_tokens: float  # the training set's mean length: the prior before a prediction is posted
    summary: dict = field(default_factory=dict)  # how it was trained (settings, steps, metrics)


def save_head(head: TrainedHead, path: Path) -> Path:
    """Writes the checkpoint directory ``path`` (replaced if it exists); returns its absolute path."""
    path = Path(path).absolute()
    meta = {"spec": head.spec.to_json(), "model": head.model, "mean_tokens": head.mean_tokens, "summary": head.summary}
    params = jax.tree.map(np.asarray, head.params)
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        checkpointer.save(
            path, ocp.args.Composite(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)), force=True
        )
    return path


def read_meta(path: Path) -> dict:
    path = Path(path).absolute()
    if not (path / "meta").is_dir():
        raise FileNotFoundError(f"{path} is not a length-head checkpoint (lamps-jax train-predictor writes one)")
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        return checkpointer.restore(path, ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def load_head(path: Path, serving_model: dict | None = None) -> TrainedHead:
    """The head at ``path``; with ``serving_model`` (a model identity) it must have been trained for that model."""
    path = Path(path).absolute()
    meta = read_meta(path)
    if serving_model is not None:
        check_same_model(meta["model"], serving_model, f"the length head at {path}")
    spec = HeadSpec(**meta["spec"])
    abstract = jax.tree.map(
        ocp.utils.to_shape_dtype_struct, init_params(spec, np.zeros((2, spec.input_size), np.float32))
    )
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(path, ocp.args.Composite(params=ocp.args.StandardRestore(abstract)))
    return TrainedHead(spec, restored["params"], meta["model"], float(meta["mean_tokens"]), meta.get("summary", {}))

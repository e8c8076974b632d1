"""Training a length head with optax: AdamW, linear warm-up then cosine decay, early stopping on held-out data.

``group_folds`` deals whole groups (conversations, subjects) into folds: each fold is held out once for
the reported numbers, and ``train_validation_rows`` splits the rest by group again for early stopping.
``train_head`` runs epochs of shuffled minibatches, scores the validation loss after each, keeps the best
parameters and stops after ``patience`` epochs without a gain. The classifier's loss is the cross-entropy
over the 50 length bins; the regression's is the squared error of log(1 + length). ``fine_tune``
continues training live parameters on new examples (online updating).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from lamps_jax.predictors.head import HeadSpec, head_outputs, init_params, length_bin


@dataclass(frozen=True)
class TrainConfig:
    learning_rate: float = 1e-3  # peak, after warm-up
    weight_decay: float = 1e-2
    warmup_steps: int = 50
    max_epochs: int = 300
    batch_size: int = 64
    patience: int = 25  # epochs without a better validation loss before stopping
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.learning_rate > 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError("learning_rate must be > 0, weight_decay and warmup_steps >= 0")
        if self.max_epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("max_epochs, batch_size and patience must be >= 1")


def group_folds(groups: np.ndarray, num_folds: int, seed: int = 0) -> list[np.ndarray]:
    """Row indices of ``num_folds`` folds that keep every group in one fold (groups dealt out at random)."""
    names = np.random.default_rng(seed).permutation(np.unique(groups))
    if num_folds < 2 or len(names) < num_folds:
        raise ValueError(f"{num_folds} folds need num_folds >= 2 and at least that many groups, got {len(names)}")
    fold_of = {name: index % num_folds for index, name in enumerate(names)}
    folds = np.array([fold_of[g] for g in groups])
    return [np.flatnonzero(folds == k) for k in range(num_folds)]


def train_validation_rows(groups: np.ndarray, rows: np.ndarray, validation: float, seed: int = 0):
    """``rows`` split by group into (train, validation), about ``validation`` of the groups on the second side."""
    if not 0 < validation < 1:
        raise ValueError(f"the validation share must be in (0, 1), got {validation}")
    num_folds = min(max(2, round(1 / validation)), len(np.unique(groups[rows])))
    held = rows[group_folds(groups[rows], num_folds, seed)[0]]
    return np.setdiff1d(rows, held), held


def loss(spec: HeadSpec, params: dict, hidden: jax.Array, lengths: jax.Array) -> jax.Array:
    outputs = head_outputs(spec, params, hidden)
    if spec.kind == "bins":
        return optax.softmax_cross_entropy_with_integer_labels(outputs, length_bin(lengths)).mean()
    return jnp.mean((outputs - jnp.log1p(lengths.astype(jnp.float32))) ** 2)


def _optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, config.warmup_steps, max(total_steps, config.warmup_steps + 1)
    )
    return optax.adamw(schedule, weight_decay=config.weight_decay)


@functools.partial(jax.jit, static_argnames=("spec", "optimizer"))
def _train_step(spec, optimizer, params, opt_state, hidden, lengths):
    """One AdamW step on the head's weights (the feature standardization stays as the training set set it)."""

    def head_loss(head: dict) -> jax.Array:
        return loss(spec, params | {"head": head}, hidden, lengths)

    value, grads = jax.value_and_grad(head_loss)(params["head"])
    updates, opt_state = optimizer.update(grads, opt_state, params["head"])
    return params | {"head": optax.apply_updates(params["head"], updates)}, opt_state, value


@dataclass(frozen=True)
class TrainResult:
    params: dict  # the best parameters on the validation loss
    epochs: int  # epochs run
    best_epoch: int
    best_validation_loss: float
    steps: int

    def summary(self, config: TrainConfig) -> dict:
        return {
            "train_config": asdict(config),
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "best_validation_loss": self.best_validation_loss,
            "steps": self.steps,
        }


def train_head(
    spec: HeadSpec,
    hidden: np.ndarray,
    lengths: np.ndarray,
    train_rows: np.ndarray,
    validation_rows: np.ndarray,
    config: TrainConfig = TrainConfig(),
    progress: bool = False,
) -> TrainResult:
    """Fits a head on ``train_rows``, early-stopped on ``validation_rows``."""
    if len(train_rows) == 0 or len(validation_rows) == 0:
        raise ValueError("training needs rows on both the train and the validation side")
    x_train, y_train = hidden[train_rows].astype(np.float32), lengths[train_rows].astype(np.int32)
    x_val, y_val = jnp.asarray(hidden[validation_rows], jnp.float32), jnp.asarray(lengths[validation_rows], jnp.int32)
    batch = min(config.batch_size, len(train_rows))
    batches_per_epoch = len(train_rows) // batch
    optimizer = _optimizer(config, config.max_epochs * batches_per_epoch)
    params = init_params(spec, x_train, y_train, config.seed)
    opt_state = optimizer.init(params["head"])
    validation_loss = jax.jit(functools.partial(loss, spec))
    rng = np.random.default_rng(config.seed)
    best = (float(validation_loss(params, x_val, y_val)), 0, params)
    epoch = steps = 0
    bar = tqdm(range(1, config.max_epochs + 1), desc="train-predictor", unit="epoch", disable=not progress)
    for epoch in bar:
        order = rng.permutation(len(train_rows))
        for first in range(0, batches_per_epoch * batch, batch):
            rows = order[first : first + batch]
            params, opt_state, _ = _train_step(spec, optimizer, params, opt_state, x_train[rows], y_train[rows])
            steps += 1
        value = float(validation_loss(params, x_val, y_val))
        if value < best[0]:
            best = (value, epoch, params)
        bar.set_postfix(validation_loss=f"{value:.4f}", best=f"{best[0]:.4f}")
        if epoch - best[1] >= config.patience:
            break
    bar.close()
    return TrainResult(best[2], epoch, best[1], best[0], steps)


def fine_tune(
    spec: HeadSpec, params: dict, hidden: np.ndarray, lengths: np.ndarray, steps: int, learning_rate: float
) -> dict:
    """``steps`` AdamW steps (constant rate) from ``params`` on all of (``hidden``, ``lengths``); returns new params."""
    optimizer = optax.adamw(learning_rate)
    opt_state = optimizer.init(params["head"])
    x, y = jnp.asarray(hidden, jnp.float32), jnp.asarray(lengths, jnp.int32)
    for _ in range(steps):
        params, opt_state, _ = _train_step(spec, optimizer, params, opt_state, x, y)
    return params

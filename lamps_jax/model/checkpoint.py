"""orbax-checkpoint save and restore of params, with the model config beside them.

Layout of a checkpoint directory: ``lamps_config.json`` (ModelConfig fields), ``params/``
(an orbax StandardCheckpointer tree) and, when one was given, ``tokenizer/`` (save_pretrained).
Checkpoints written before q/k/v and gate/up were fused into one matrix each still load (fused here).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from lamps_jax.config import ModelConfig, RopeScaling
from lamps_jax.model.llama import Params
from lamps_jax.model.sources import ModelLoadError
from lamps_jax.model.weights import fuse_layer, init_params

CONFIG_FILE = "lamps_config.json"


def _checkpointer():
    import orbax.checkpoint as ocp  # imported only for checkpoints: it adds ~0.3 s to every start

    return ocp.StandardCheckpointer()


def is_checkpoint(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and (path / "params").is_dir()


def save_checkpoint(path: Path, params: Params, cfg: ModelConfig, tokenizer: Any = None) -> None:
    path = path.absolute()
    path.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(path / "tokenizer"))
    (path / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    with _checkpointer() as ckpt:
        ckpt.save(path / "params", params, force=True)


def load_checkpoint(path: Path) -> tuple[ModelConfig, Params]:
    path = path.absolute()
    try:
        fields = json.loads((path / CONFIG_FILE).read_text())
        fields["rope_scaling"] = RopeScaling(**fields["rope_scaling"])
        fields["eos_token_ids"] = tuple(fields["eos_token_ids"])
        cfg = ModelConfig(**fields)
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ModelLoadError(f"cannot read checkpoint config {path / CONFIG_FILE}: {err!r}") from err
    abstract = jax.eval_shape(lambda: init_params(cfg))
    try:
        with _checkpointer() as ckpt:
            params = ckpt.restore(path / "params", abstract)
    except Exception as err:  # orbax raises a variety of errors on damaged trees
        params = _restore_separate_projections(path / "params", abstract)
        if params is None:
            raise ModelLoadError(f"corrupt checkpoint {path / 'params'}: {err!r}") from err
    return cfg, params


def _restore_separate_projections(path: Path, abstract: Params) -> Params | None:
    """A checkpoint written before q/k/v and gate/up were fused, fused now; None for any other tree."""
    try:
        with _checkpointer() as ckpt:
            saved = ckpt.restore(path)
        params = {**saved, "layers": [jax.tree.map(jnp.asarray, fuse_layer(layer)) for layer in saved["layers"]]}
    except Exception:  # not readable as the old layout either: the caller reports the first error
        return None
    same = jax.tree.structure(params) == jax.tree.structure(abstract) and all(
        (a.shape, a.dtype) == (b.shape, b.dtype) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(abstract))
    )
    return params if same else None

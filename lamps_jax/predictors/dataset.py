"""A length dataset: per prompt, the hidden state its answer starts from and the length the model generated.

Saved as ``<stem>.npz`` (arrays) beside ``<stem>.json`` (how it was collected: the model's identity,
temperature, token cap, prompt sets, counts). ``lengths`` counts the tokens generated until EOS or the
tool-call tag; ``capped`` marks answers cut at the token cap (their length is a lower bound).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class LengthDataset:
    hidden: np.ndarray  # [N, D] float32 final-norm hidden state of each prompt's last token
    lengths: np.ndarray  # [N] int32 tokens generated until EOS or a tool-call tag
    capped: np.ndarray  # [N] bool: stopped by the token cap instead
    prompt_tokens: np.ndarray  # [N] int32
    types: np.ndarray  # [N] str: the prompt's type (per-type-mean baseline)
    groups: np.ndarray  # [N] str: conversation / subject (the held-out split keeps a group together)
    meta: dict = field(default_factory=dict)  # how it was collected; "model" is the model identity

    def __post_init__(self) -> None:
        n = len(self.lengths)
        for name in ("hidden", "capped", "prompt_tokens", "types", "groups"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"dataset field {name} has {len(getattr(self, name))} rows, lengths has {n}")
        if self.hidden.ndim != 2:
            raise ValueError(f"hidden states must be [N, D], got shape {self.hidden.shape}")

    def __len__(self) -> int:
        return len(self.lengths)

    def save(self, stem: Path) -> tuple[Path, Path]:
        """Writes ``stem``.npz and ``stem``.json; returns both paths."""
        stem = Path(stem)
        stem.parent.mkdir(parents=True, exist_ok=True)
        arrays = stem.with_suffix(".npz")
        np.savez_compressed(
            arrays,
            hidden=self.hidden.astype(np.float32),
            lengths=self.lengths.astype(np.int32),
            capped=self.capped.astype(bool),
            prompt_tokens=self.prompt_tokens.astype(np.int32),
            types=self.types.astype(str),
            groups=self.groups.astype(str),
        )
        meta = stem.with_suffix(".json")
        meta.write_text(json.dumps(self.meta, indent=2) + "\n")
        return arrays, meta

    @classmethod
    def load(cls, stem: Path) -> LengthDataset:
        stem = Path(stem)
        arrays, meta = stem.with_suffix(".npz"), stem.with_suffix(".json")
        if not arrays.is_file() or not meta.is_file():
            raise FileNotFoundError(f"no length dataset at {stem}: {arrays} and {meta} (lamps-jax collect-lengths)")
        with np.load(arrays) as data:
            return cls(**{name: data[name] for name in data.files}, meta=json.loads(meta.read_text()))

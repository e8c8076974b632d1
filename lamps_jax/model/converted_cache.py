"""GGUF models converted once: the float32 params, config and tokenizer of a conversion kept in the disk cache.

Reading a GGUF file means parsing its metadata (SmolLM2's tokenizer alone is ~100k strings), dequantizing every
tensor and fusing the projections: seconds on every start. The first load of a file writes the result to the
``models`` folder of the disk cache (``disk_cache.py``): the params as one safetensors file (read back memory-mapped),
the config as JSON and the tokenizer with ``save_pretrained``. A conversion is named by the file (resolved path,
size, modification time) and a hash of the code that converts (this module, the GGUF loader, the params layout and
the config); a change to any of them converts again, and the older conversions of a file of that name are removed,
so the cache holds one per model.

A conversion read back loads its tokenizer on a thread while the params are read and the engine starts, and comes
with it as a ``Future``: transformers' import and the tokenizer files are about a second of Python, while reading the
params and loading the compiled steps mostly release the GIL.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import numpy as np
import safetensors.numpy

from lamps_jax import config as config_module
from lamps_jax.config import ModelConfig, RopeScaling
from lamps_jax.disk_cache import cache_root
from lamps_jax.model import gguf_loader, weights
from lamps_jax.model.llama import Params

CONVERTING_CODE = (Path(__file__), Path(gguf_loader.__file__), Path(weights.__file__), Path(config_module.__file__))
PARAMS_FILE = "params.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_DIR = "tokenizer"


@functools.cache
def _code_fingerprint() -> str:
    digest = hashlib.sha256()
    for path in CONVERTING_CODE:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def conversion_dir(path: Path) -> Path | None:
    """The folder of ``path``'s conversion in the disk cache; None when the cache is off."""
    root = cache_root()
    if root is None:
        return None
    path = path.resolve()
    stat = path.stat()
    name = hashlib.sha256(f"{path}\n{stat.st_size}\n{stat.st_mtime_ns}\n{_code_fingerprint()}".encode()).hexdigest()
    return root / "models" / f"{path.stem}-{name[:16]}"


def _flat(params: Params) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {jax.tree_util.keystr(key): np.asarray(leaf) for key, leaf in leaves}


def _unflat(arrays: dict[str, np.ndarray]) -> Params:
    """The params tree back from its ``keystr`` paths: ``['layers'][3]['wqkv']`` is ``params["layers"][3]["wqkv"]``."""
    params: dict = {}
    for path, array in arrays.items():
        keys = [name or int(index) for name, index in re.findall(r"\['([^']+)'\]|\[(\d+)\]", path)]
        node = params
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = array
    return jax.device_put(_lists(params))  # one transfer of the whole tree: much faster than one per array


def _lists(node):
    """Dicts keyed 0..n-1 (the layers, as unflattened) become lists."""
    if not isinstance(node, dict):
        return node
    if node and all(isinstance(k, int) for k in node):
        return [_lists(node[i]) for i in range(len(node))]
    return {k: _lists(v) for k, v in node.items()}


def _config_from_json(text: str) -> ModelConfig:
    fields = json.loads(text)
    fields["rope_scaling"] = RopeScaling(**fields["rope_scaling"])
    fields["eos_token_ids"] = tuple(fields["eos_token_ids"])
    return ModelConfig(**fields)


def _load_tokenizer(folder: Path, convert_tokenizer: Callable[[], Any]) -> Any:
    """The conversion's tokenizer; one that does not load is rebuilt by ``convert_tokenizer()``, and the conversion
    dropped (the next start converts it whole)."""
    from transformers import PreTrainedTokenizerFast

    try:
        return PreTrainedTokenizerFast.from_pretrained(str(folder / TOKENIZER_DIR))
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)
        return convert_tokenizer()


def _read(folder: Path, convert_tokenizer: Callable[[], Any]) -> tuple[ModelConfig, Params, Any] | None:
    """(config, params, a Future of the tokenizer); None for a conversion cut short or damaged (converted again)."""
    if not (folder / TOKENIZER_DIR).is_dir():
        return None
    loading = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenizer-load")
    tokenizer: Future = loading.submit(_load_tokenizer, folder, convert_tokenizer)
    loading.shutdown(wait=False)  # its thread ends with the load
    try:
        cfg = _config_from_json((folder / CONFIG_FILE).read_text())
        params = _unflat(safetensors.numpy.load_file(folder / PARAMS_FILE))
    except Exception:
        tokenizer.cancel() or tokenizer.exception()  # not left loading beside the conversion
        return None
    return cfg, params, tokenizer


def _write(folder: Path, cfg: ModelConfig, params: Params, tokenizer: Any) -> None:
    """Writes into a temporary folder renamed into place, so a reader never sees half a conversion."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    for older in folder.parent.glob(f"{folder.name.rsplit('-', 1)[0]}-*"):
        shutil.rmtree(older, ignore_errors=True)  # conversions by other code, or of another version of the file
    staging = folder.with_name(f"{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    safetensors.numpy.save_file(_flat(params), staging / PARAMS_FILE)
    (staging / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    tokenizer.save_pretrained(str(staging / TOKENIZER_DIR))
    staging.rename(folder)


def load_converted(
    path: Path, convert: Callable[[], tuple[ModelConfig, Params, Any]], convert_tokenizer: Callable[[], Any]
) -> tuple[ModelConfig, Params, Any]:
    """(config, float32 params, tokenizer) of the GGUF file ``path``: from the cache (the tokenizer as a ``Future``),
    else from ``convert()``, whose result is cached for the next start. ``convert_tokenizer()`` rebuilds the
    tokenizer alone, for a cached one that does not load."""
    folder = conversion_dir(path)
    cached = _read(folder, convert_tokenizer) if folder is not None and folder.is_dir() else None
    if cached is not None:
        return cached
    cfg, params, tokenizer = convert()
    if folder is not None:
        _write(folder, cfg, params, tokenizer)
    return cfg, params, tokenizer

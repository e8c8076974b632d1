"""lamps_jax: a JAX serving engine for augmented LLMs (requests that pause for API calls).

The public names are imported on first use, so ``import lamps_jax`` (and ``lamps-jax --help``) does
not load JAX or transformers until something needs them.
"""

import importlib
import os

# transformers' advice that PyTorch is missing is not the user's concern: the engine never uses torch.
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

_EXPORTS = {
    "LLM": "lamps_jax.engine",
    "LLMEngine": "lamps_jax.engine",
    "InvalidRequestError": "lamps_jax.engine",
    "ApiCall": "lamps_jax.request",
    "ApiCallRecord": "lamps_jax.request",
    "KVStrategy": "lamps_jax.request",
    "RequestOutput": "lamps_jax.request",
    "SamplingParams": "lamps_jax.request",
    "Segment": "lamps_jax.request",
    "CacheConfig": "lamps_jax.config",
    "EngineConfig": "lamps_jax.config",
    "ModelConfig": "lamps_jax.config",
    "SchedulerConfig": "lamps_jax.config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lamps_jax' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__

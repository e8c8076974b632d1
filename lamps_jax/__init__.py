"""lamps_jax: a JAX serving engine for augmented LLMs (requests that pause for API calls)."""

from lamps_jax.config import CacheConfig, EngineConfig, ModelConfig, SchedulerConfig
from lamps_jax.engine import LLM, InvalidRequestError, LLMEngine
from lamps_jax.request import RequestOutput, SamplingParams

__all__ = [
    "LLM",
    "CacheConfig",
    "EngineConfig",
    "InvalidRequestError",
    "LLMEngine",
    "ModelConfig",
    "RequestOutput",
    "SamplingParams",
    "SchedulerConfig",
]

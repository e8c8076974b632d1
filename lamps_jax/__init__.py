"""lamps_jax: a JAX serving engine for augmented LLMs (requests that pause for API calls)."""

from lamps_jax.config import CacheConfig, EngineConfig, ModelConfig, SchedulerConfig
from lamps_jax.engine import LLM, InvalidRequestError, LLMEngine
from lamps_jax.request import ApiCall, KVStrategy, RequestOutput, SamplingParams, Segment

__all__ = [
    "LLM",
    "ApiCall",
    "CacheConfig",
    "EngineConfig",
    "InvalidRequestError",
    "KVStrategy",
    "LLMEngine",
    "ModelConfig",
    "RequestOutput",
    "SamplingParams",
    "SchedulerConfig",
    "Segment",
]

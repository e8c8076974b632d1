"""Frozen configuration dataclasses for the model, KV cache, scheduler and engine.

Static values live here (hashable, validated in ``__post_init__``); anything derived at run time,
such as how many pages fit in the KV memory budget, is returned by the code that computes it.
``ModelConfig.from_hf_dict`` reads a Hugging Face ``config.json`` of a Llama-family model
(Llama 2/3, Mistral, Qwen2/2.5, SmolLM2).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from lamps_jax.scheduler.predictors import make_length_predictor

SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


# What ``load_model`` takes: float32 and bfloat16 are a ModelConfig dtype; int8 and w8a8 quantize float32 weights.
DTYPES = ("float32", "bfloat16", "int8", "w8a8")
QUANTIZED_DTYPES = ("int8", "w8a8")


@dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling (HF ``rope_scaling``); ``default`` means none."""

    rope_type: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0  # llama3 only
    high_freq_factor: float = 4.0  # llama3 only
    original_max_position_embeddings: int = 8192  # llama3 only

    def __post_init__(self) -> None:
        if self.rope_type not in SUPPORTED_ROPE_TYPES:
            raise ValueError(f"unsupported rope scaling type {self.rope_type!r}; supported: {SUPPORTED_ROPE_TYPES}")
        if self.factor <= 0:
            raise ValueError(f"rope scaling factor must be > 0, got {self.factor}")


@dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of a Llama-family decoder."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10_000.0
    rope_scaling: RopeScaling = field(default_factory=RopeScaling)
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # q/k/v projection bias (Qwen2)
    sliding_window: int | None = None  # Mistral v0.1; the engine caps max_model_len to it
    eos_token_ids: tuple[int, ...] = ()
    dtype: str = "float32"  # "float32" or "bfloat16": weights, activations and KV pages

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "max_position_embeddings",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"ModelConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of K and V held per token over all layers."""
        itemsize = 4 if self.dtype == "float32" else 2
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * itemsize

    def check_tensor_parallel(self, tensor_parallel: int) -> None:
        """Raises ``ValueError`` unless the heads, kv heads and MLP split evenly ``tensor_parallel`` ways."""
        tp = tensor_parallel
        if tp < 1:
            raise ValueError(f"tensor_parallel must be >= 1, got {tp}")
        if self.num_heads % tp:
            raise ValueError(f"tensor_parallel={tp} must divide the model's {self.num_heads} attention heads")
        if self.num_kv_heads % tp and tp % self.num_kv_heads:
            raise ValueError(
                f"tensor_parallel={tp} must divide the model's {self.num_kv_heads} kv heads or be a multiple of them"
            )
        if self.intermediate_size % tp:
            raise ValueError(f"tensor_parallel={tp} must divide the MLP width {self.intermediate_size}")

    def kv_heads_per_device(self, tensor_parallel: int = 1) -> int:
        """KV heads each device of a ``tensor_parallel``-way mesh holds: K / tp, or one when K < tp
        (each kv head is then replicated on tp / K devices; see ``model/sharding.py``)."""
        return max(1, self.num_kv_heads // tensor_parallel)

    def kv_bytes_per_token_per_device(self, tensor_parallel: int = 1) -> int:
        """Bytes of K and V one device holds per token over all layers, with the kv heads split over the mesh."""
        return self.kv_bytes_per_token // self.num_kv_heads * self.kv_heads_per_device(tensor_parallel)

    @classmethod
    def from_hf_dict(cls, hf: dict[str, Any], dtype: str = "float32") -> ModelConfig:
        model_type = hf.get("model_type", "llama")
        if model_type not in SUPPORTED_ARCHITECTURES:
            raise ValueError(f"unsupported model_type {model_type!r}; supported: {SUPPORTED_ARCHITECTURES}")
        num_heads = hf["num_attention_heads"]
        head_dim = hf.get("head_dim") or hf["hidden_size"] // num_heads
        # transformers 5 writes "rope_parameters"; older configs use rope_theta + rope_scaling.
        rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
        rope_theta = rope.pop("rope_theta", None) or hf.get("rope_theta", 10_000.0)
        rope_type = rope.get("rope_type") or rope.get("type") or "default"
        scaling = RopeScaling(
            rope_type=rope_type,
            factor=float(rope.get("factor") or 1.0),
            low_freq_factor=float(rope.get("low_freq_factor", 1.0)),
            high_freq_factor=float(rope.get("high_freq_factor", 4.0)),
            original_max_position_embeddings=int(rope.get("original_max_position_embeddings", 8192)),
        )
        eos = hf.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
        use_window = hf.get("use_sliding_window", model_type == "mistral")
        return cls(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=num_heads,
            num_kv_heads=hf.get("num_key_value_heads") or num_heads,
            head_dim=head_dim,
            rms_norm_eps=hf.get("rms_norm_eps", 1e-5),
            rope_theta=float(rope_theta),
            rope_scaling=scaling,
            max_position_embeddings=hf.get("max_position_embeddings", 2048),
            tie_word_embeddings=hf.get("tie_word_embeddings", False),
            attention_bias=hf.get("attention_bias", model_type == "qwen2"),
            sliding_window=hf.get("sliding_window") if use_window else None,
            eos_token_ids=eos_ids,
            dtype=dtype,
        )


@dataclass(frozen=True)
class CacheConfig:
    """Device KV page arrays: page size and the memory budget they are sized from."""

    page_size: int = 16
    kv_memory_bytes: int = 256 * 2**20
    num_pages: int | None = None  # overrides the budget when set (page 0 included)

    def __post_init__(self) -> None:
        if self.page_size <= 0:
            raise ValueError(f"page_size must be > 0, got {self.page_size}")
        if self.num_pages is not None and self.num_pages < 2:
            raise ValueError(f"num_pages must be >= 2 (page 0 is reserved), got {self.num_pages}")
        if self.num_pages is None and self.kv_memory_bytes <= 0:
            raise ValueError(f"kv_memory_bytes must be > 0, got {self.kv_memory_bytes}")

    def pages_for(self, model: ModelConfig, tensor_parallel: int = 1) -> int:
        """Number of device pages (page 0 included) that the budget holds for ``model``; under tensor
        parallelism ``kv_memory_bytes`` is per device and a page holds that device's share of the kv heads."""
        if self.num_pages is not None:
            return self.num_pages
        bytes_per_token = model.kv_bytes_per_token_per_device(tensor_parallel)
        pages = self.kv_memory_bytes // (bytes_per_token * self.page_size)
        if pages < 2:
            raise ValueError(
                f"kv_memory_bytes={self.kv_memory_bytes} holds {pages} page(s) of {self.page_size} "
                f"tokens for this model ({bytes_per_token} bytes/token per device); need at least 2"
            )
        return int(pages)


ADMISSIONS = ("chunk", "whole")
SWAP_BUDGETS = ("fixed", "infercept", "overlap", "unlimited")
API_TIME_SOURCES = ("type_mean", "oracle")
STARVATION_SCOPES = ("started", "all")
SCORE_STEPS = ("saturated", "single")
# Policies of systems built on vLLM v1, which runs with prefix caching on by default: the config turns it on.
PREFIX_CACHING_POLICIES = ("vllm_apc", "continuum")


@dataclass(frozen=True)
class SchedulerConfig:
    """Per-iteration budgets of the scheduler and the modelling choices that docs/RESULTS.md names."""

    policy: str = "fcfs"
    max_num_seqs: int = 32  # requests running at once
    max_num_batched_tokens: int = 256  # token budget B of one iteration (prefill chunks + decodes)
    # chunk: pages for the scheduled chunk only, prefill chunks mixed with decodes (vLLM v1, INFERCEPT, LAMPS);
    # whole: vLLM 0.2: pages for the whole prompt at admission, prompt-only iterations of max_prompt_batch_tokens
    admission: str = "chunk"
    max_prompt_batch_tokens: int = 2048  # whole admission: tokens of one prompt-only iteration
    admission_watermark: float = 0.0  # whole admission: share of the pages left free after admitting (vLLM 0.2: 0.01)
    decodes_first: bool = True  # running decodes are scheduled before prefill and recompute chunks
    kv_strategy: str = "preserve"  # preserve | discard | swap: what a paused request's KV does
    # pages copied each way per iteration: fixed (max_swap_pages_per_step), infercept (its per-iteration
    # formula from the cost profile and free memory), overlap (what hides behind a full iteration), unlimited
    swap_budget: str = "fixed"
    max_swap_pages_per_step: int = 64  # the fixed swap budget, pages per direction
    num_host_pages: int = 0  # host pool capacity for swapped pages; when full, swap falls back to discard
    cost_profile: str = "gptj-6b-a100"  # cost model the policies reason with: a built-in name or a JSON file
    api_time_source: str = "type_mean"  # what policies know of a call's duration: per-type mean, or oracle
    starvation_threshold: int = 100  # LAMPS: iterations in the waiting queue before a request goes to the front
    starvation_scope: str = "started"  # LAMPS: which waiting requests age: started (ran before) or all
    score_step: str = "saturated"  # LAMPS score: decode iterations timed as a full (saturated) or one-token one
    length_noise: float = 0.0  # relative error of the oracle-with-noise output-length predictor
    # LAMPS's output-length predictor: oracle | oracle-noise:X | mean | learned:PATH (scheduler/predictors.py)
    length_predictor: str = "oracle"
    enable_prefix_caching: bool = False  # freed full pages stay cached; a request with a cached prefix reuses it
    # AugServe's adaptive token budget: the least it shrinks to, as a share of max_num_batched_tokens (its ceiling)
    adaptive_budget_floor: float = 0.25
    predictor_seed: int = 0

    def __post_init__(self) -> None:
        if self.max_num_seqs <= 0 or self.max_num_batched_tokens <= 0 or self.max_prompt_batch_tokens <= 0:
            raise ValueError("max_num_seqs, max_num_batched_tokens and max_prompt_batch_tokens must be > 0")
        if self.kv_strategy not in ("preserve", "discard", "swap"):
            raise ValueError(f"kv_strategy must be preserve, discard or swap, got {self.kv_strategy!r}")
        for name, allowed in (
            ("admission", ADMISSIONS),
            ("swap_budget", SWAP_BUDGETS),
            ("api_time_source", API_TIME_SOURCES),
            ("starvation_scope", STARVATION_SCOPES),
            ("score_step", SCORE_STEPS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.max_swap_pages_per_step <= 0 or self.num_host_pages < 0:
            raise ValueError("max_swap_pages_per_step must be > 0 and num_host_pages >= 0")
        if not 0 <= self.admission_watermark < 1:
            raise ValueError(f"admission_watermark must be in [0, 1), got {self.admission_watermark}")
        if self.starvation_threshold < 1 or self.length_noise < 0:
            raise ValueError("starvation_threshold must be >= 1 and length_noise >= 0")
        make_length_predictor(self.length_predictor, self.length_noise)  # a bad spec fails here
        if not 0 < self.adaptive_budget_floor <= 1:
            raise ValueError(f"adaptive_budget_floor must be in (0, 1], got {self.adaptive_budget_floor}")
        if self.policy in PREFIX_CACHING_POLICIES and not self.enable_prefix_caching:
            object.__setattr__(self, "enable_prefix_caching", True)

    @property
    def max_step_tokens(self) -> int:
        """The most tokens one iteration computes (a whole-admission prompt batch may exceed the token budget)."""
        if self.admission == "whole":
            return max(self.max_num_batched_tokens, self.max_prompt_batch_tokens)
        return self.max_num_batched_tokens


@dataclass(frozen=True)
class EngineConfig:
    """Everything the engine needs besides the weights."""

    cache: CacheConfig = field(default_factory=CacheConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    max_model_len: int | None = None  # defaults to min(model context, 2048)
    query_block: int = 16  # prefill chunks are cut into rows of this many tokens
    kv_block_tokens: int = 128  # attention walks the KV in blocks of this many tokens
    seed: int = 0  # seeds requests that give no seed of their own
    attention_impl: str = "auto"  # auto | reference | pallas (see pallas_kernels/ops.py)
    api_timeout: float | None = 60.0  # seconds before an API call counts as failed
    api_error_policy: str = "resume"  # resume: append the error text and go on | abort: end with an error
    tool_call_tags: tuple[str, str] | None = None  # e.g. ("<tool_call>", "</tool_call>") to detect tool calls
    session_ttl: float = 60.0  # seconds a session's parked KV waits for its next turn before it is released
    compilation_cache: bool = True  # keep compiled steps on disk between runs (executable_store.py)
    # full: every step bucket is ready before the engine serves; background: it serves once the one-row buckets
    # are, the rest compile or load meanwhile (step_executables.py)
    warmup: str = "full"
    tensor_parallel: int = 1  # devices of the ("tp",) mesh the model and KV pages are split over (model/sharding.py)

    def __post_init__(self) -> None:
        if self.api_error_policy not in ("resume", "abort"):
            raise ValueError(f"api_error_policy must be resume or abort, got {self.api_error_policy!r}")
        if self.attention_impl not in ("auto", "reference", "cpu", "pallas"):
            raise ValueError(f"attention_impl must be auto, reference or pallas, got {self.attention_impl!r}")
        if self.query_block <= 0 or self.kv_block_tokens <= 0:
            raise ValueError("query_block and kv_block_tokens must be > 0")
        if self.kv_block_tokens % self.cache.page_size:
            raise ValueError(
                f"kv_block_tokens ({self.kv_block_tokens}) must be a multiple of page_size ({self.cache.page_size})"
            )
        if self.max_model_len is not None and self.max_model_len <= 0:
            raise ValueError(f"max_model_len must be > 0, got {self.max_model_len}")
        if not self.session_ttl >= 0:
            raise ValueError(f"session_ttl must be >= 0 seconds, got {self.session_ttl}")
        if self.warmup not in ("full", "background"):
            raise ValueError(f"warmup must be full or background, got {self.warmup!r}")
        if self.tensor_parallel < 1:
            raise ValueError(f"tensor_parallel must be >= 1, got {self.tensor_parallel}")

    def resolve_max_model_len(self, model: ModelConfig) -> int:
        limit = model.max_position_embeddings
        if model.sliding_window:
            limit = min(limit, model.sliding_window)
        if self.max_model_len is None:
            return min(limit, 2048)
        if self.max_model_len > limit:
            raise ValueError(f"max_model_len {self.max_model_len} exceeds the model's limit {limit}")
        return self.max_model_len


PRESETS: dict[str, ModelConfig] = {
    # Random-init model for tests and demos without weights; vocab matches the byte tokenizer.
    "tiny": ModelConfig(
        vocab_size=512,
        hidden_size=256,
        intermediate_size=768,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        head_dim=64,
        rope_theta=10_000.0,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        eos_token_ids=(0,),
    ),
}

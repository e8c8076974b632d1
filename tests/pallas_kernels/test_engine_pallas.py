"""The engine with ``attention_impl="pallas"`` (on CPU: the Triton kernel, interpreted) generates the
same greedy tokens as with the jnp reference, and the dispatch picks each backend's kernel."""

from __future__ import annotations

import dataclasses

import pytest

from lamps_jax.engine import LLMEngine
from lamps_jax.pallas_kernels import reference
from lamps_jax.pallas_kernels.gpu import paged_attention as gpu_kernel
from lamps_jax.pallas_kernels.ops import paged_attention_fn
from lamps_jax.pallas_kernels.tpu import paged_attention as tpu_kernel
from lamps_jax.request import SamplingParams
from tests.conftest import small_engine_config


def greedy_tokens(model, attention_impl: str) -> list[list[int]]:
    # 2 decode buckets and 1 prefill bucket; 64 tokens = 2 KV blocks of 32, pages of 4.
    config = small_engine_config(max_num_seqs=2, token_budget=8, max_model_len=64, query_block=8)
    engine = LLMEngine(model, dataclasses.replace(config, attention_impl=attention_impl))
    prompts = [[5, 9, 2], list(range(1, 14)), [7] * 21]  # one chunk, a partial second chunk, three chunks
    ids = [engine.add_request(p, SamplingParams(max_tokens=14, ignore_eos=True)) for p in prompts]
    outputs = {}
    while engine.has_unfinished_requests():
        outputs.update({out.req_id: out.token_ids for out in engine.step()})
    return [outputs[i] for i in ids]


def test_pallas_engine_equals_reference_engine(tiny_model) -> None:
    pallas = greedy_tokens(tiny_model, "pallas")
    assert pallas == greedy_tokens(tiny_model, "reference")
    assert all(len(tokens) == 14 for tokens in pallas)


def test_dispatch_by_backend() -> None:
    assert paged_attention_fn("reference", "cpu") is reference.paged_attention
    assert paged_attention_fn("pallas", "tpu") is tpu_kernel.paged_attention
    assert paged_attention_fn("pallas", "gpu") is gpu_kernel.paged_attention
    on_cpu = paged_attention_fn("pallas", "cpu")
    assert on_cpu.func is gpu_kernel.paged_attention and on_cpu.keywords["interpret"]
    with pytest.raises(ValueError, match="not available"):
        paged_attention_fn("pallas", "metal")

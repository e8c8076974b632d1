"""Runs the serving model on a prompt set and records, per prompt, its answer's starting hidden state and length.

Every prompt is one chat-templated request that asks for hidden states (``return_hidden_states``), sampled
at the serving temperature with its own seed, stopped at EOS or the tool-call tag (a stop string), capped at
``max_tokens``. The engine serves them concurrently (its scheduler batches them); the hidden state is the one
the first sampled token came from (``Request.segment_hidden_states[0]``: the prompt's last token).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from lamps_jax.engine import LLMEngine
from lamps_jax.predictors.dataset import LengthDataset
from lamps_jax.predictors.identity import model_identity
from lamps_jax.predictors.prompts import TOOL_CALL_TAG, LengthPrompt
from lamps_jax.request import SamplingParams


def chat_text(tokenizer, prompt: LengthPrompt) -> str:
    messages = [{"role": "user", "content": prompt.text}]
    if prompt.system is not None:
        messages.insert(0, {"role": "system", "content": prompt.system})
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def collect_lengths(
    engine: LLMEngine,
    prompts: Sequence[LengthPrompt],
    model_name: str,
    params: dict,
    temperature: float,
    max_tokens: int,
    seed: int = 0,
    progress: bool = True,
) -> LengthDataset:
    """``params``: the model's weights (for its identity). Prompts longer than the context are skipped."""
    if engine.tokenizer is None:
        raise ValueError("collect-lengths needs a model with a tokenizer (its chat template)")
    requests, kept = [], []
    for index, prompt in enumerate(prompts):
        sampling = SamplingParams(
            max_tokens=max_tokens, temperature=temperature, seed=seed + index, stop=(TOOL_CALL_TAG,)
        )
        text = chat_text(engine.tokenizer, prompt)
        if len(engine.tokenizer.encode(text, add_special_tokens=False)) + max_tokens > engine.max_model_len:
            continue
        req_id = engine.add_request(text, sampling, return_hidden_states=True)
        requests.append(engine.scheduler.requests[req_id])
        kept.append(prompt)
    with tqdm(total=len(requests), desc="collect-lengths", unit="prompt", disable=not progress) as bar:
        while engine.has_unfinished_requests():
            bar.update(len(engine.step()))
            engine.wait_for_work()
    failed = [r.req_id for r in requests if not r.segment_hidden_states]
    if failed:
        raise RuntimeError(f"{len(failed)} request(s) ended without a hidden state: {', '.join(failed[:5])}")
    meta = {
        "model": model_identity(model_name, engine.model_config, params),
        "temperature": temperature,
        "max_tokens": max_tokens,
        "seed": seed,
        "stop": ["EOS", TOOL_CALL_TAG],
        "num_prompts": len(requests),
        "num_skipped_too_long": len(prompts) - len(requests),
    }
    return LengthDataset(
        hidden=np.stack([r.segment_hidden_states[0] for r in requests]).astype(np.float32),
        lengths=np.array([r.num_generated_tokens for r in requests], np.int32),
        capped=np.array([r.status.name == "FINISHED_LENGTH" for r in requests]),
        prompt_tokens=np.array([len(r.prompt_token_ids) for r in requests], np.int32),
        types=np.array([p.type for p in kept]),
        groups=np.array([p.group for p in kept]),
        meta=meta,
    )

"""Engine behaviour: sampling, stops, abort, the offline API and real SmolLM2 weights."""

from __future__ import annotations

import pytest

from lamps_jax.engine import LLM, LLMEngine
from lamps_jax.request import SamplingParams
from tests.conftest import small_engine_config


def run(engine: LLMEngine, prompts, params) -> list:
    ids = [engine.add_request(p, sp) for p, sp in zip(prompts, params)]
    outputs = {}
    while engine.has_unfinished_requests():
        outputs.update({o.req_id: o for o in engine.step()})
    return [outputs[i] for i in ids]


def test_seeded_sampling_does_not_depend_on_the_batch(tiny_engine: LLMEngine) -> None:
    params = SamplingParams(max_tokens=12, temperature=1.0, top_p=0.95, seed=42, ignore_eos=True)
    alone = run(tiny_engine, [[3, 4, 5]], [params])[0].token_ids
    crowd = run(tiny_engine, [[9] * 30, [3, 4, 5], [7, 7]], [params.__class__(max_tokens=5), params, params])
    assert crowd[1].token_ids == alone
    other_seed = run(
        tiny_engine, [[3, 4, 5]], [SamplingParams(max_tokens=12, temperature=1.0, seed=7, ignore_eos=True)]
    )[0]
    assert other_seed.token_ids != alone


def test_top_k_one_and_tiny_top_p_are_greedy(tiny_engine: LLMEngine) -> None:
    prompt = [[11, 12, 13, 14]]
    greedy = run(tiny_engine, prompt, [SamplingParams(max_tokens=10, ignore_eos=True)])[0].token_ids
    top_k = run(tiny_engine, prompt, [SamplingParams(max_tokens=10, temperature=2.0, top_k=1, ignore_eos=True)])
    top_p = run(tiny_engine, prompt, [SamplingParams(max_tokens=10, temperature=2.0, top_p=1e-6, ignore_eos=True)])
    assert top_k[0].token_ids == greedy and top_p[0].token_ids == greedy


def test_top_k_restricts_the_support(tiny_model) -> None:
    import jax.numpy as jnp
    import numpy as np

    from lamps_jax.model.sampling import sample
    from lamps_jax.model.step_inputs import SamplingInputs

    logits = jnp.asarray(np.random.default_rng(0).normal(size=(64, 50)), jnp.float32)
    top3 = np.argsort(-np.asarray(logits), axis=-1)[:, :3]
    s = SamplingInputs(
        temperature=jnp.full(64, 5.0),
        top_k=jnp.full(64, 3, jnp.int32),
        top_p=jnp.ones(64),
        seeds=jnp.arange(64, dtype=jnp.uint32),
        steps=jnp.zeros(64, jnp.int32),
    )
    tokens = np.asarray(sample(logits, s))
    assert all(t in row for t, row in zip(tokens, top3))
    assert len(set(tokens - top3[:, 0])) > 1  # with temperature 5 not everything is the argmax


def test_stop_token_and_stop_string(tiny_engine: LLMEngine) -> None:
    base = run(tiny_engine, [[20, 21]], [SamplingParams(max_tokens=10, ignore_eos=True)])[0]
    stop_token = base.token_ids[3]
    first = base.token_ids.index(stop_token)
    by_token = run(
        tiny_engine, [[20, 21]], [SamplingParams(max_tokens=10, stop_token_ids=(stop_token,), ignore_eos=True)]
    )[0]
    assert by_token.token_ids == base.token_ids[: first + 1]
    assert by_token.finish_reason == "stop" and by_token.stop_reason == stop_token

    text = base.text
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    by_string = run(tiny_engine, [[20, 21]], [SamplingParams(max_tokens=10, stop=(stop,), ignore_eos=True)])[0]
    assert by_string.finish_reason == "stop" and by_string.stop_reason == stop
    assert by_string.text == text[: text.find(stop)]


def test_abort_mid_generation_frees_pages(tiny_model) -> None:
    engine = LLMEngine(tiny_model, small_engine_config())
    keep = engine.add_request([1, 2, 3], SamplingParams(max_tokens=8, ignore_eos=True))
    drop = engine.add_request([4, 5, 6], SamplingParams(max_tokens=50, ignore_eos=True))
    engine.step()
    engine.step()
    aborted = engine.abort_request(drop)
    assert aborted.finish_reason == "abort" and aborted.finished and len(aborted.token_ids) == 2
    assert engine.abort_request(drop) is None
    outputs = []
    while engine.has_unfinished_requests():
        outputs += engine.step()
    assert [o.req_id for o in outputs] == [keep]
    assert engine.page_pool.num_free == engine.page_pool.num_usable


def test_llm_generate_keeps_prompt_order_and_reports_latency() -> None:
    llm = LLM("tiny", small_engine_config())
    outs = llm.generate(["a long prompt " * 5, "hi"], SamplingParams(max_tokens=4, ignore_eos=True), use_tqdm=False)
    assert [o.prompt for o in outs] == ["a long prompt " * 5, "hi"]
    assert all(o.finished and o.finish_reason == "length" and len(o.token_ids) == 4 for o in outs)
    assert all(0 < o.time_to_first_token <= o.latency for o in outs)


@pytest.mark.slow
def test_smollm2_answers_a_chat_question(smollm2_model) -> None:
    engine = LLMEngine(
        smollm2_model,
        small_engine_config(
            page_size=16, num_pages=64, max_num_seqs=4, token_budget=64, max_model_len=256, query_block=16
        ),
    )
    tok = smollm2_model.tokenizer
    questions = ["What is the capital of France?", "What is the capital of Germany?"]
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
        for q in questions
    ]
    outs = run(engine, prompts, [SamplingParams(max_tokens=24)] * 2)
    assert "Paris" in outs[0].text and "Berlin" in outs[1].text
    assert all(o.finish_reason == "stop" for o in outs)  # <|im_end|> is the eos

"""The runner returns segment hidden states in the step's one host transfer, without compiling again."""

from __future__ import annotations

import jax
import numpy as np

from lamps_jax.engine import LLMEngine
from lamps_jax.model.llama import forward_dense
from lamps_jax.request import ApiCall, SamplingParams, Segment
from lamps_jax.runner import num_compilations
from tests.conftest import small_engine_config
from tests.engine.test_api_calls import drain


def add_requests(engine: LLMEngine, count: int, ask_every: int) -> list:
    """Scripted requests (one or two API calls each); every ``ask_every``-th asks for hidden states."""
    rng = np.random.default_rng(0)
    requests = []
    for i in range(count):
        prompt = [int(t) for t in rng.integers(1, 500, size=int(rng.integers(3, 40)))]
        call = ApiCall("sim", duration=0.001, result_token_ids=(7, 8, 9))
        segments = [Segment(3, call)] + [Segment(2, call)] * (i % 2) + [Segment(4)]
        req_id = engine.add_request(
            prompt, SamplingParams(seed=i), segments=segments, return_hidden_states=i % ask_every == 0
        )
        requests.append(engine.scheduler.requests[req_id])
    return requests


def test_hidden_states_add_no_compile_and_no_transfer(tiny_model, monkeypatch) -> None:
    engine = LLMEngine(tiny_model, small_engine_config(num_pages=48, max_num_seqs=8, token_budget=32))
    warm = num_compilations()
    transfers = steps = 0
    device_get, execute = jax.device_get, engine.runner.execute

    def counting_device_get(tree):
        nonlocal transfers
        transfers += 1
        return device_get(tree)

    def counting_execute(sched_out):
        nonlocal steps
        steps += 1
        return execute(sched_out)

    monkeypatch.setattr(jax, "device_get", counting_device_get)
    monkeypatch.setattr(engine.runner, "execute", counting_execute)
    requests = add_requests(engine, 12, ask_every=2)
    drain(engine)
    assert steps > 10
    assert transfers == steps  # one host transfer per step, hidden states or not
    assert num_compilations() == warm
    for i, request in enumerate(requests):
        num_calls = 1 + i % 2
        assert len(request.segment_hidden_states) == (1 + num_calls if i % 2 == 0 else 0)


def test_the_first_state_is_the_prompts_last_token_after_the_final_norm(tiny_model) -> None:
    engine = LLMEngine(tiny_model, small_engine_config(num_pages=48, max_num_seqs=8, token_budget=32))
    requests = add_requests(engine, 4, ask_every=1)
    drain(engine)
    params = tiny_model.params
    for request in requests:
        hidden = request.segment_hidden_states[0]
        assert hidden.shape == (tiny_model.config.hidden_size,) and hidden.dtype == np.float32
        logits = np.asarray(forward_dense(params, np.asarray(request.prompt_token_ids, np.int32), tiny_model.config))
        np.testing.assert_allclose(hidden @ np.asarray(params["lm_head"]), logits[-1], rtol=1e-4, atol=1e-4)
        assert not any(np.array_equal(hidden, later) for later in request.segment_hidden_states[1:])

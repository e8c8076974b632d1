"""An engine with --length-predictor learned:PATH: the head runs in the engine, the scheduler sees numbers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lamps_jax.engine import LLMEngine
from lamps_jax.model.registry import load_model
from lamps_jax.predictors.checkpoint import save_head
from lamps_jax.predictors.identity import ModelMismatchError
from lamps_jax.predictors.serving import OnlineUpdater
from tests.conftest import small_engine_config
from tests.engine.test_api_calls import drain
from tests.predictors.test_checkpoint import random_head
from tests.predictors.test_hidden_states import add_requests


def lamps_engine(model, length_predictor: str) -> LLMEngine:
    config = small_engine_config(num_pages=48, max_num_seqs=8, token_budget=32)
    scheduler = dataclasses.replace(config.scheduler, policy="lamps", length_predictor=length_predictor)
    return LLMEngine(model, dataclasses.replace(config, scheduler=scheduler))


def test_head_predictions_reach_the_policy(tiny_model, tmp_path) -> None:
    path = save_head(random_head(tiny_model, "log"), tmp_path / "head")
    engine = lamps_engine(tiny_model, f"learned:{path}")
    lengths, head = engine.scheduler.policy.lengths, engine.segment_lengths.head
    assert lengths.prior == 123.0
    requests = add_requests(engine, 6, ask_every=10)  # the engine asks for every request's hidden states
    while not all(r.segment_hidden_states for r in requests):
        engine.step()
    for r in requests:
        assert lengths.predict(10**6, f"{r.req_id}:{r.segment_index}") == max(
            1, round(head.predict(r.segment_hidden_states[-1]))
        )
    drain(engine)
    assert all(len(r.segment_hidden_states) == 2 + i % 2 for i, r in enumerate(requests))
    assert not lengths._posted  # finished requests' predictions are dropped
    assert len(engine.segment_lengths.examples) == sum(len(r.segments) for r in requests)
    assert lengths.mean == np.mean([s.num_tokens for r in requests for s in r.segments])  # observed, not the prior

    updater = OnlineUpdater(head, steps=5, learning_rate=1e-2)
    probe = requests[0].segment_hidden_states[0]
    before = head.predict(probe)
    updater.submit(engine.segment_lengths.examples).result()
    updater.close()
    assert head.predict(probe) != before


def test_a_head_for_another_model_is_refused(tiny_model, tmp_path) -> None:
    path = save_head(random_head(tiny_model, "bins"), tmp_path / "head")
    with pytest.raises(ModelMismatchError, match="trained on the hidden states of model 'tiny'"):
        lamps_engine(load_model("tiny", seed=1), f"learned:{path}")


def test_policies_without_a_length_predictor_refuse_one(tiny_model) -> None:
    config = small_engine_config()
    scheduler = dataclasses.replace(config.scheduler, policy="fcfs", length_predictor="mean")
    with pytest.raises(ValueError, match="takes no length predictor"):
        LLMEngine(tiny_model, dataclasses.replace(config, scheduler=scheduler))

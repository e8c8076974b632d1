"""After warm-up, a run of mixed requests never compiles the serving step again."""

from __future__ import annotations

import numpy as np

from lamps_jax.engine import LLMEngine
from lamps_jax.request import SamplingParams
from lamps_jax.runner import num_compilations
from tests.conftest import small_engine_config


def test_mixed_run_does_not_recompile(tiny_model) -> None:
    engine = LLMEngine(tiny_model, small_engine_config(num_pages=48, max_num_seqs=8, token_budget=32))
    warm = num_compilations()
    rng = np.random.default_rng(0)
    ids = []
    for i in range(24):
        prompt = list(rng.integers(1, 500, size=int(rng.integers(1, 90))))
        params = SamplingParams(
            max_tokens=int(rng.integers(1, 30)),
            temperature=float(rng.choice([0.0, 0.7, 1.3])),
            top_k=int(rng.choice([0, 1, 5])),
            top_p=float(rng.choice([1.0, 0.9])),
            seed=i,
        )
        ids.append(engine.add_request(prompt, params))
    steps = 0
    while engine.has_unfinished_requests():
        engine.step()
        steps += 1
        if steps == 5:
            engine.abort_request(ids[3])
    assert steps > 20
    assert num_compilations() == warm

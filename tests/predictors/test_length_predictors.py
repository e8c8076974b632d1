"""The scheduler's length predictors from a --length-predictor spec (pure Python, no JAX)."""

from __future__ import annotations

import pytest

from lamps_jax.config import SchedulerConfig
from lamps_jax.scheduler.predictors import (
    MeanLengthPredictor,
    NoisyOraclePredictor,
    PostedLengthPredictor,
    make_length_predictor,
    parse_length_predictor,
)


def test_specs_parse() -> None:
    assert parse_length_predictor("oracle") == ("oracle", None)
    assert parse_length_predictor("oracle-noise:0.3") == ("oracle-noise", 0.3)
    assert parse_length_predictor("mean") == ("mean", None)
    assert parse_length_predictor("learned:/tmp/head") == ("learned", "/tmp/head")


@pytest.mark.parametrize("spec", ["", "oracle:1", "oracle-noise", "oracle-noise:-1", "oracle-noise:x", "learned:", "x"])
def test_bad_specs_fail_clearly(spec: str) -> None:
    with pytest.raises(ValueError, match=r"length predictor|oracle-noise"):
        SchedulerConfig(policy="lamps", length_predictor=spec)


def test_length_noise_maps_onto_the_oracle_only() -> None:
    noisy = make_length_predictor("oracle", length_noise=0.3, seed=1)
    same = make_length_predictor("oracle-noise:0.3", seed=1)
    assert isinstance(noisy, NoisyOraclePredictor)
    assert [noisy.predict(100, f"r:{i}") for i in range(20)] == [same.predict(100, f"r:{i}") for i in range(20)]
    with pytest.raises(ValueError, match="applies to the oracle predictor only"):
        SchedulerConfig(policy="lamps", length_noise=0.3, length_predictor="mean")


def test_mean_predictor_learns_from_observed_segments() -> None:
    mean = make_length_predictor("mean")
    assert isinstance(mean, MeanLengthPredictor)
    assert mean.predict(999, "a:0") == 100  # the prior
    for n in (10, 20, 60):
        mean.observe(n)
    assert mean.predict(999, "a:0") == mean.predict(1, "b:3") == 30


def test_posted_predictions_win_over_the_mean_and_are_forgotten() -> None:
    posted = make_length_predictor("learned:/some/head")
    assert isinstance(posted, PostedLengthPredictor)
    posted.observe(40)
    posted.post("a:0", 7.4)
    posted.post("a:1", 250.6)
    assert (posted.predict(999, "a:0"), posted.predict(1, "a:1"), posted.predict(5, "b:0")) == (7, 251, 40)
    posted.forget("a", 1)
    assert posted.predict(999, "a:0") == posted.predict(999, "a:1") == 40


def test_lamps_takes_the_configured_predictor() -> None:
    from lamps_jax.scheduler.cost_model import load_cost_model
    from lamps_jax.scheduler.policies import policy_class

    cost = load_cost_model("gptj-6b-a100")
    for policy in ("lamps", "lamps_plus"):
        lamps = policy_class(policy)(SchedulerConfig(policy=policy, length_predictor="mean"), cost)
        assert isinstance(lamps.lengths, MeanLengthPredictor)

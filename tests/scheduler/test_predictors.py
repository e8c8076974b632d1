"""API-time and length predictors: means, residual life, noisy oracle stability and spread."""

from __future__ import annotations

import statistics

import pytest

from lamps_jax.scheduler.predictors import ApiTimePredictor, NoisyOraclePredictor


def test_api_time_mean_per_type() -> None:
    predictor = ApiTimePredictor(default=1.5)
    assert predictor.predict("search") == 1.5
    for duration in (1.0, 2.0, 3.0):
        predictor.observe("search", duration)
    predictor.observe("calc", 0.1)
    assert predictor.predict("search") == pytest.approx(2.0)
    assert predictor.predict("calc") == pytest.approx(0.1)
    assert predictor.predict("image") == 1.5


def test_api_time_history_keeps_the_latest() -> None:
    predictor = ApiTimePredictor(history=2)
    for duration in (1.0, 2.0, 3.0):
        predictor.observe("search", duration)
    assert predictor.predict("search") == pytest.approx(2.5)


def test_remaining_time_from_longer_calls() -> None:
    predictor = ApiTimePredictor()
    for duration in (1.0, 2.0, 3.0, 10.0):
        predictor.observe("search", duration)
    assert predictor.predict_remaining("search", 0.0) == pytest.approx(4.0)  # the mean
    assert predictor.predict_remaining("search", 1.5) == pytest.approx(3.5)  # (0.5 + 1.5 + 8.5) / 3
    assert predictor.predict_remaining("search", 9.0) == pytest.approx(1.0)  # only the 10 s call is longer


def test_remaining_time_of_an_overrunning_call() -> None:
    predictor = ApiTimePredictor(default=1.0)
    for duration in (1.0, 2.0, 3.0, 10.0):
        predictor.observe("search", duration)
    assert predictor.predict_remaining("search", 20.0) == pytest.approx(0.4)  # 10% of the 4 s mean
    assert predictor.predict_remaining("image", 0.3) == pytest.approx(0.7)  # default 1 s minus elapsed
    assert predictor.predict_remaining("image", 5.0) == pytest.approx(0.1)  # 10% of the default


def test_api_time_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="history"):
        ApiTimePredictor(history=0)
    with pytest.raises(ValueError, match="seconds"):
        ApiTimePredictor().observe("search", -1.0)
    with pytest.raises(ValueError, match="elapsed"):
        ApiTimePredictor().predict_remaining("search", -1.0)


def test_zero_error_is_exact() -> None:
    predictor = NoisyOraclePredictor(0.0, seed=3)
    assert [predictor.predict(n, f"r{n}:0") for n in (1, 7, 250)] == [1, 7, 250]


def test_noisy_prediction_is_stable_per_key() -> None:
    first, again = NoisyOraclePredictor(0.3, seed=1), NoisyOraclePredictor(0.3, seed=1)
    predictions = [first.predict(100, f"r{i}:0") for i in range(20)]
    assert predictions == [first.predict(100, f"r{i}:0") for i in range(20)]
    assert predictions == [again.predict(100, f"r{i}:0") for i in range(20)]
    assert len(set(predictions)) > 10
    other_seed = NoisyOraclePredictor(0.3, seed=2)
    assert predictions != [other_seed.predict(100, f"r{i}:0") for i in range(20)]


def test_noisy_relative_error_distribution() -> None:
    predictor = NoisyOraclePredictor(0.2, seed=0)
    errors = [predictor.predict(1000, f"r{i}:{i % 3}") / 1000 - 1 for i in range(3000)]
    assert abs(statistics.fmean(errors)) < 0.02
    assert statistics.stdev(errors) == pytest.approx(0.2, abs=0.02)


def test_noisy_prediction_is_at_least_one() -> None:
    predictor = NoisyOraclePredictor(5.0)
    assert min(predictor.predict(2, f"r{i}:0") for i in range(500)) == 1
    with pytest.raises(ValueError, match="relative_error"):
        NoisyOraclePredictor(-0.1)

"""Input checks of `lamps-jax bench` in both modes, and real mode serving exactly the requests asked for."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamps_jax.bench import comparison
from lamps_jax.bench.comparison import exact_poisson_arrivals, real_comparison
from lamps_jax.cli import main
from lamps_jax.scheduler.cost_model import PROFILES
from lamps_jax.sim.engine import simulated_engine
from lamps_jax.workload.arrivals import poisson_arrivals
from lamps_jax.workload.traces import load_trace
from tests.bench.test_sim_grid import write_small_trace


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 0.0}, "a request rate must be a number > 0"),
        ({"rate": -1.0}, "a request rate must be a number > 0"),
        ({"num_requests": 0}, "the number of requests must be >= 1"),
        ({"kv_capacity_tokens": 0}, r"a KV capacity must be at least one page \(16 tokens\), got 0 tokens"),
        ({"kv_capacity_tokens": -5}, "a KV capacity must be at least one page"),
    ],
)
def test_real_mode_rejects_bad_inputs_before_loading_a_model(kwargs: dict, message: str) -> None:
    args = {"num_requests": 4, "rate": 2.0, "kv_capacity_tokens": None} | kwargs
    with pytest.raises(ValueError, match=message):
        real_comparison("no-such-model", "multi", policies=["lamps"], **args)


@pytest.mark.parametrize(
    ("option", "message"),
    [(["--rates", "0"], "a request rate must be a number > 0"), (["--kv-tokens", "0"], "a KV capacity must be")],
)
def test_sim_mode_rejects_a_zero_rate_or_kv_capacity(tmp_path: Path, capsys, option: list[str], message: str) -> None:
    argv = ["bench", "--trace", str(write_small_trace(tmp_path)), "--window", "5", "--output", str(tmp_path / "out")]
    assert main(argv + option) == 2
    assert message in capsys.readouterr().err


def test_exact_poisson_arrivals_gives_the_count_asked_for(tmp_path: Path) -> None:
    requests = load_trace(write_small_trace(tmp_path))
    assert len(poisson_arrivals(requests, 4.0, 8 / 4.0, seed=0)) < 8  # a window of count / rate often falls short
    arrivals = exact_poisson_arrivals(requests, 4.0, 8, seed=0)
    assert len(arrivals) == 8 and arrivals == sorted(arrivals, key=lambda r: r.arrival_time)
    assert exact_poisson_arrivals(requests, 4.0, 8, seed=0) == arrivals


def test_real_mode_serves_exactly_the_requests_asked_for(tmp_path: Path, monkeypatch, capsys) -> None:
    """The engine stands in for the model (a simulated one, to skip compiling); the arrivals are real mode's."""
    configs = []

    def simulated(loaded, config, runner=None):  # a simulated engine has its own runner: nothing to share
        configs.append(config)
        kv_tokens = (config.cache.num_pages - 1) * config.cache.page_size
        return simulated_engine(PROFILES["gptj-6b-a100"], config.scheduler, kv_capacity_tokens=kv_tokens)

    monkeypatch.setattr(comparison, "load_model", lambda name: None)
    monkeypatch.setattr(comparison, "LLMEngine", simulated)
    trace = str(write_small_trace(tmp_path))
    rows = real_comparison("tiny", trace, 8, 4.0, ["vllm", "lamps"], seed=0, kv_capacity_tokens=4000)
    assert [(r["requests"], r["finished"]) for r in rows] == [(8, 8), (8, 8)]
    assert [c.cache.num_pages for c in configs] == [4000 // 16 + 1] * 2
    assert "serving 8 requests at 4 requests/s under 2 policies" in capsys.readouterr().out

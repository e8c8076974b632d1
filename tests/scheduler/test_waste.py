"""Waste equations, strategy choice and the LAMPS score against hand-computed values."""

from __future__ import annotations

import pytest

from lamps_jax.request import KVStrategy
from lamps_jax.scheduler.cost_model import CostModel
from lamps_jax.scheduler.waste import (
    cheapest_strategy,
    decode_area,
    discard_waste,
    memory_time_score,
    preserve_waste,
    recompute_chunks,
    swap_waste,
)


def make_cost(**overrides) -> CostModel:
    """f(t) = 0.001·t + 0.01 s (so f(1) = 0.011, f(2) = 0.012, f(4) = 0.014), B = 4; g(t) = 0.002·t + 0.001 s."""
    fields = {
        "name": "test",
        "iter_per_token": 0.001,
        "iter_per_context_token": 0.0,
        "iter_base": 0.01,
        "swap_per_token": 0.002,
        "swap_base": 0.001,
        "token_budget": 4,
        "swap_budget_tokens": None,
        "kv_bytes_per_token": 1,
    }
    return CostModel(**(fields | overrides))


def test_preserve_waste() -> None:
    assert preserve_waste(10, 2.0) == pytest.approx(20.0)
    assert preserve_waste(0, 5.0) == 0.0
    with pytest.raises(ValueError, match="api_time"):
        preserve_waste(10, -1.0)


def test_recompute_chunks() -> None:
    assert recompute_chunks(10, make_cost()) == [4, 4, 2]
    assert recompute_chunks(10, make_cost(), running_tokens=3) == [1] * 10
    assert recompute_chunks(10, make_cost(), running_tokens=9) == [1] * 10  # at least one token per iteration
    assert recompute_chunks(0, make_cost()) == []


def test_discard_waste_chunked() -> None:
    # C = 10, C_other = 6, chunk 4: chunks 4, 4, 2 holding 4, 8, 10 tokens.
    # 0.014·(4 + 6) + 0.014·(8 + 6) + 0.012·(10 + 6) = 0.14 + 0.196 + 0.192 = 0.528
    assert discard_waste(10, 6, make_cost()) == pytest.approx(0.528)
    # 2 running tokens leave chunks of 2: Σ_{j=1..5} 0.012·(2j + 6) = 0.012·(30 + 30) = 0.72
    assert discard_waste(10, 6, make_cost(), running_tokens=2) == pytest.approx(0.72)


def test_discard_waste_in_one_chunk_is_inferceps_formula() -> None:
    # C = 3 <= B: f(3)·C + f(3)·C_other = 0.013·3 + 0.013·5 = 0.104
    assert discard_waste(3, 5, make_cost()) == pytest.approx(0.104)
    assert discard_waste(0, 5, make_cost()) == 0.0


def test_discard_waste_charges_the_context_read() -> None:
    # b = 0.001 s per cached token: f(4, 0)·4 + f(4, 4)·8 + f(2, 8)·10 = 0.014·4 + 0.018·8 + 0.020·10 = 0.4
    assert discard_waste(10, 0, make_cost(iter_per_context_token=0.001)) == pytest.approx(0.4)


def test_swap_waste() -> None:
    # g(10) = 0.021: out and in stall a batch of 50 tokens: 2·0.021·50 = 2.1; overlapped: 2·0.021·10 = 0.42
    assert swap_waste(10, 50, make_cost()) == pytest.approx(2.1)
    assert swap_waste(10, 50, make_cost(), overlapped=True) == pytest.approx(0.42)
    assert swap_waste(0, 50, make_cost()) == 0.0


def test_big_context_and_instant_call_preserves() -> None:
    # W_P = 0.001·1000 = 1; discarding or swapping 1000 tokens costs far more
    assert cheapest_strategy(1000, 0.001, 500, 1500, make_cost()) is KVStrategy.PRESERVE


def test_small_context_and_long_call_frees_memory() -> None:
    # C = 2, T = 100: W_P = 200, W_D = 0.012·2 = 0.024, W_S = 2·0.005·2 = 0.02
    assert cheapest_strategy(2, 100.0, 0, 2, make_cost()) is KVStrategy.SWAP
    assert cheapest_strategy(2, 100.0, 0, 2, make_cost(), allow_swap=False) is KVStrategy.DISCARD


def test_swap_beats_discard_when_others_would_stall() -> None:
    # C = 100, T = 100, C_other = 1000: W_P = 10000, W_D = Σ_{j=1..25} 0.014·(4j + 1000) = 368.2,
    # W_S with only the request in the batch = 2·g(100)·100 = 2·0.201·100 = 40.2
    assert discard_waste(100, 1000, make_cost()) == pytest.approx(368.2)
    assert cheapest_strategy(100, 100.0, 1000, 100, make_cost()) is KVStrategy.SWAP
    assert cheapest_strategy(100, 100.0, 1000, 100, make_cost(), allow_swap=False) is KVStrategy.DISCARD


def test_ties_prefer_preserve_then_discard() -> None:
    assert cheapest_strategy(0, 5.0, 10, 10, make_cost()) is KVStrategy.PRESERVE  # all three are 0
    free = make_cost(iter_per_token=0.0, iter_base=0.0, swap_per_token=0.0, swap_base=0.0)
    assert cheapest_strategy(10, 5.0, 10, 10, free) is KVStrategy.DISCARD  # W_D = W_S = 0 < W_P = 50


def test_decode_area() -> None:
    # f1 = 0.011: 0.011·(10·4 + 4²/2) = 0.011·48 = 0.528
    assert decode_area(10, 4, make_cost()) == pytest.approx(0.528)
    assert decode_area(10, 0, make_cost()) == 0.0


@pytest.mark.parametrize("strategy", list(KVStrategy))
def test_score_without_a_call_is_the_decode_area(strategy: KVStrategy) -> None:
    # P = 10, 4 + 6 = 10 tokens decoded: 0.011·(10·10 + 10²/2) = 0.011·150 = 1.65
    assert memory_time_score(10, 4, 0.0, 0, 6, strategy, make_cost()) == pytest.approx(1.65)
    assert memory_time_score(10, 10, 0.0, 0, 0, strategy, make_cost()) == pytest.approx(1.65)


@pytest.mark.parametrize(
    ("strategy", "call"),
    [
        (KVStrategy.PRESERVE, 28.0),  # C·T = 14·2
        (KVStrategy.DISCARD, 0.504),  # staircase of 14: 0.014·4 + 0.014·8 + 0.014·12 + 0.012·14
        (KVStrategy.SWAP, 0.812),  # 2·g(14)·14 = 2·0.029·14
    ],
)
def test_score_with_a_call(strategy: KVStrategy, call: float) -> None:
    # P = 10, n = 4 (C = 14), T = 2, r = 3, m = 6:
    # A_pre = 0.011·(10·4 + 8) = 0.528; A_post = 0.011·(17·6 + 18) = 1.32
    assert memory_time_score(10, 4, 2.0, 3, 6, strategy, make_cost()) == pytest.approx(0.528 + call + 1.32)


def test_shorter_requests_score_lower() -> None:
    cost = make_cost()
    assert memory_time_score(10, 5, 0.0, 0, 0, KVStrategy.PRESERVE, cost) < memory_time_score(
        10, 50, 0.0, 0, 0, KVStrategy.PRESERVE, cost
    )
    assert memory_time_score(100, 5, 0.0, 0, 0, KVStrategy.PRESERVE, cost) > memory_time_score(
        10, 5, 0.0, 0, 0, KVStrategy.PRESERVE, cost
    )
    assert memory_time_score(10, 5, 1.0, 2, 5, KVStrategy.PRESERVE, cost) < memory_time_score(
        10, 5, 10.0, 2, 5, KVStrategy.PRESERVE, cost
    )

"""Cost model: f and g on hand-checked values, the papers' profiles, JSON round trips, the fits."""

from __future__ import annotations

import json
import random

import pytest

from lamps_jax.config import ModelConfig
from lamps_jax.scheduler.cost_model import PROFILES, CostModel, fit_linear, fit_plane, load_cost_model
from lamps_jax.sim.capacity import kv_capacity_tokens, num_parameters
from tests.scheduler.test_waste import make_cost as make_waste_cost


def make_cost(**overrides) -> CostModel:
    """The waste tests' model plus a context term of 0.0001 s per cached token."""
    return make_waste_cost(**({"iter_per_context_token": 0.0001} | overrides))


def test_iteration_and_swap_time() -> None:
    cost = make_cost()
    assert cost.iteration_time(4) == pytest.approx(0.014)  # 0.001·4 + 0.01
    assert cost.iteration_time(4, 100) == pytest.approx(0.024)  # 0.004 + 0.0001·100 + 0.01
    assert cost.swap_time(10) == pytest.approx(0.021)  # 0.002·10 + 0.001
    assert cost.swap_time(0) == 0.0
    with pytest.raises(ValueError, match="token count"):
        cost.swap_time(-1)


def test_invalid_fields_are_rejected() -> None:
    with pytest.raises(ValueError, match="iter_base"):
        make_cost(iter_base=-0.1)
    with pytest.raises(ValueError, match="token_budget"):
        make_cost(token_budget=0)
    with pytest.raises(ValueError, match="swap_budget_tokens"):
        make_cost(swap_budget_tokens=-1)
    with pytest.raises(ValueError, match="swap_per_token"):
        make_cost(swap_per_token=float("nan"))


def test_profiles_follow_the_papers() -> None:
    gptj = PROFILES["gptj-6b-a100"]
    assert gptj.kv_bytes_per_token == 458752  # 28 layers x 2 x 4096 x 2 bytes
    assert gptj.kv_capacity_tokens == 60817  # 27.9e9 / 458752 = 60817.3
    assert gptj.swap_per_token == pytest.approx(1.835008e-5)  # 458752 / 25e9
    assert gptj.iteration_time(384) == pytest.approx(0.0277792)  # 0.0463 ms·384 + 10 ms
    assert gptj.swap_budget_tokens == 111
    lamps = PROFILES["gptj-6b-a100-lamps"]
    assert lamps.iteration_time(100) == pytest.approx(0.02100)  # 0.0408 ms·100 + 16.92 ms
    assert lamps.swap_budget_tokens is None
    ctx = PROFILES["gptj-6b-a100-ctx"]
    assert ctx.iteration_time(384) == gptj.iteration_time(384)  # without context, INFERCEPT's f
    # 32 decode rows over 1,000 cached tokens each: 32,000 x 458752 B read at 1555 GB/s = 9.44 ms more
    assert ctx.iteration_time(32, 32_000) == pytest.approx(gptj.iteration_time(32) + 32_000 * 458752 / 1555e9)
    vicuna = PROFILES["vicuna-13b-2xa100"]
    assert vicuna.kv_bytes_per_token == 819200  # 40 layers x 2 x 5120 x 2 bytes
    assert vicuna.kv_capacity_tokens == 65917  # 54e9 / 819200 = 65917.97
    assert vicuna.swap_per_token == pytest.approx(1.6384e-5)  # 819200 / 50e9
    assert all(name == profile.name for name, profile in PROFILES.items())


def test_llama31_8b_h100_follows_its_roofline() -> None:
    """Recomputed from the stated constants: Llama-3.1-8B's shape, the H100's datasheet, the stated assumptions."""
    llama = ModelConfig(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_layers=32,
        num_heads=32,
        num_kv_heads=8,
        head_dim=128,
        dtype="bfloat16",
    )
    params = num_parameters(llama)
    assert params == 8_030_261_248
    weights = 2 * params  # bf16
    assert weights / 1e9 == pytest.approx(16.06, abs=0.005)
    kv_bytes = 2 * 32 * 8 * 128 * 2
    assert llama.kv_bytes_per_token == kv_bytes == 131072
    hbm, peak, mfu, overhead, pcie = 3.35e12, 989e12, 0.5, 1e-3, 55e9
    h100 = PROFILES["llama31-8b-h100"]
    assert h100.iter_per_token == pytest.approx(2 * params / (peak * mfu))  # 32.48 us per new token
    assert h100.iter_per_token == pytest.approx(32.478e-6, rel=1e-4)
    assert h100.iter_per_context_token == pytest.approx(kv_bytes / hbm)  # 0.0391 us per cached token
    assert h100.iter_base == pytest.approx(weights / hbm + overhead)  # 4.794 ms weight read + 1 ms
    assert h100.iter_base == pytest.approx(5.794e-3, rel=1e-4)
    assert h100.swap_per_token == pytest.approx(kv_bytes / pcie)  # 2.383 us per token
    assert h100.swap_base == pytest.approx(50e-6)
    assert h100.token_budget == 8192 and h100.swap_budget_tokens is None
    assert h100.kv_bytes_per_token == kv_bytes
    # KV memory: 90% of 80 GB, less the weights and a 2 GB activation reserve
    assert h100.kv_capacity_tokens == int((0.9 * 80e9 - weights - 2e9) // kv_bytes) == 411525
    # the same sizing as sim.capacity, less the reserve
    assert kv_capacity_tokens(llama, 80e9) - h100.kv_capacity_tokens == int(2e9 / kv_bytes) + 1
    # an unloaded decode step over a 2,048-token context, and a full-budget prefill step
    assert h100.iteration_time(1, 2048) == pytest.approx(
        2 * params / (peak * mfu) + 2048 * kv_bytes / hbm + 5.794e-3, rel=1e-4
    )
    assert h100.iteration_time(8192) == pytest.approx(0.27186, rel=1e-4)
    # the roofline's saturation point, not used as B: compute equals the weight read at ~148 tokens
    assert (weights / hbm) / h100.iter_per_token == pytest.approx(147.6, abs=0.1)


@pytest.mark.parametrize("name", list(PROFILES))
def test_profile_json_round_trip(name: str, tmp_path) -> None:
    path = tmp_path / f"{name}.json"
    PROFILES[name].save(path)
    assert CostModel.load(path) == PROFILES[name]
    assert load_cost_model(str(path)) == PROFILES[name]
    assert load_cost_model(name) is PROFILES[name]


def test_from_dict_names_the_bad_field() -> None:
    good = make_cost().to_dict()
    del good["kv_capacity_tokens"]  # optional
    assert CostModel.from_dict(good) == make_cost()
    with pytest.raises(ValueError, match=r"missing field.*token_budget"):
        CostModel.from_dict({k: v for k, v in good.items() if k != "token_budget"})
    with pytest.raises(ValueError, match="'token_budget'"):
        CostModel.from_dict(good | {"token_budget": "many"})
    with pytest.raises(ValueError, match="'token_budget'"):
        CostModel.from_dict(good | {"token_budget": 3.5})
    with pytest.raises(ValueError, match="'iter_base'"):
        CostModel.from_dict(good | {"iter_base": True})
    with pytest.raises(ValueError, match=r"unknown field.*speed"):
        CostModel.from_dict(good | {"speed": 1})


def test_load_cost_model_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"gptj-6b-a100.*vicuna-13b-2xa100"):
        load_cost_model("no-such-profile")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_cost_model(str(bad))
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="JSON object"):
        load_cost_model(str(listed))


def test_fit_linear_recovers_a_line() -> None:
    slope, intercept, r2 = fit_linear(list(range(10)), [3 * x + 2 for x in range(10)])
    assert (slope, intercept, r2) == pytest.approx((3, 2, 1))
    with pytest.raises(ValueError, match="at least 2 points"):
        fit_linear([1], [1])
    with pytest.raises(ValueError, match="as many"):
        fit_linear([1, 2], [1])
    with pytest.raises(ValueError, match="distinct"):
        fit_linear([1, 1, 1], [1, 2, 3])


def test_fit_plane_recovers_a_plane() -> None:
    rows = [(x, y, 2 * x + 0.5 * y + 1) for x in (1, 2, 4, 8) for y in (0, 10, 100)]
    assert fit_plane(rows) == pytest.approx((2, 0.5, 1, 1))
    rng = random.Random(0)
    noisy = [(x, y, f + rng.gauss(0, 0.5)) for x, y, f in rows]
    a, b, _, r2 = fit_plane(noisy)
    assert a == pytest.approx(2, abs=0.3) and b == pytest.approx(0.5, abs=0.05)
    assert 0.95 < r2 < 1
    with pytest.raises(ValueError, match="at least 3"):
        fit_plane(rows[:2])
    with pytest.raises(ValueError, match="span a plane"):
        fit_plane([(x, 2 * x, x) for x in range(5)])

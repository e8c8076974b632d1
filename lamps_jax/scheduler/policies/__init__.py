"""Scheduling policies by name."""

from lamps_jax.config import SchedulerConfig
from lamps_jax.scheduler.cost_model import CostModel
from lamps_jax.scheduler.policies.base import Policy
from lamps_jax.scheduler.policies.infercept import InferceptPolicy, InferceptSwapPolicy
from lamps_jax.scheduler.policies.lamps import LampsNoRankPolicy, LampsPolicy
from lamps_jax.scheduler.policies.sjf import SjfPolicy
from lamps_jax.scheduler.policies.vllm import VllmPolicy

POLICIES: dict[str, type[Policy]] = {
    p.name: p
    for p in (Policy, VllmPolicy, InferceptPolicy, InferceptSwapPolicy, SjfPolicy, LampsPolicy, LampsNoRankPolicy)
}


def make_policy(config: SchedulerConfig, cost: CostModel) -> Policy:
    if config.policy not in POLICIES:
        raise ValueError(f"unknown scheduling policy {config.policy!r}; known: {', '.join(POLICIES)}")
    return POLICIES[config.policy](config, cost)

"""Scheduling policies by name."""

from lamps_jax.config import SchedulerConfig
from lamps_jax.scheduler.cost_model import CostModel
from lamps_jax.scheduler.policies.augserve import AugServePolicy
from lamps_jax.scheduler.policies.autellix import AutellixPolicy
from lamps_jax.scheduler.policies.base import Policy
from lamps_jax.scheduler.policies.continuum import ContinuumPolicy
from lamps_jax.scheduler.policies.infercept import InferceptPolicy, InferceptSwapPolicy
from lamps_jax.scheduler.policies.lamps import LampsNoRankPolicy, LampsPolicy
from lamps_jax.scheduler.policies.lamps_plus import LampsPlusPolicy, parse_switches
from lamps_jax.scheduler.policies.sjf import SjfPolicy
from lamps_jax.scheduler.policies.vllm import VllmPolicy
from lamps_jax.scheduler.policies.vllm_apc import VllmApcPolicy

POLICIES: dict[str, type[Policy]] = {
    p.name: p
    for p in (
        Policy,
        VllmPolicy,
        InferceptPolicy,
        InferceptSwapPolicy,
        SjfPolicy,
        LampsPolicy,
        LampsNoRankPolicy,
        ContinuumPolicy,
        AutellixPolicy,
        AugServePolicy,
        VllmApcPolicy,
        LampsPlusPolicy,
    )
}


def policy_class(name: str) -> type[Policy]:
    """The policy called ``name``: a registered name, or a LAMPS+ ablation (``lamps_plus-no_<switch>``)."""
    if name in POLICIES:
        return POLICIES[name]
    if name.startswith(f"{LampsPlusPolicy.name}-"):
        parse_switches(name)  # an unknown switch fails here
        return LampsPlusPolicy
    raise ValueError(f"unknown scheduling policy {name!r}; known: {', '.join(POLICIES)}, lamps_plus-no_<switch>")


def make_policy(config: SchedulerConfig, cost: CostModel) -> Policy:
    return policy_class(config.policy)(config, cost)

"""Scheduling policies by name."""

from lamps_jax.scheduler.policies.base import Policy
from lamps_jax.scheduler.policies.fcfs import FcfsPolicy

POLICIES: dict[str, type] = {FcfsPolicy.name: FcfsPolicy}


def make_policy(name: str) -> Policy:
    if name not in POLICIES:
        raise ValueError(f"unknown scheduling policy {name!r}; known: {', '.join(POLICIES)}")
    return POLICIES[name]()

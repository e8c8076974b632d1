"""Multi-host serving: one engine process per host, joined by JAX's own runtime (``jax.distributed``).

Every process builds the same engine over one ``("tp",)`` mesh that spans all processes' devices and runs
the same compiled programs; only process 0 schedules (and serves HTTP). Each step, process 0's runner
turns its schedule into a ``StepPlan`` (the swaps' page ids and the padded arrays of every call), sends it
with ``multihost_utils.broadcast_one_to_all`` (an int32 header ``[kind, length]``, then the plan packed into
one int32 vector padded to a power of two, so each broadcast size compiles once), and runs it; the other
processes receive the plan and run it too (``follow``), so that every device joins the step's collectives.
A stop message (``release_followers``) ends the followers' loops.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from lamps_jax.model.step_inputs import SamplingInputs, StepInputs

_STEP, _STOP = 1, 2
_MIN_PAYLOAD = 256

Arrays = tuple[StepInputs, SamplingInputs]


@dataclasses.dataclass(frozen=True)
class StepPlan:
    """Everything a step does on the devices, in order: swaps, then one call per row group."""

    swap_out: list[tuple[list[int], list[int]]]  # (device page ids, host page ids) per copy
    swap_in: list[tuple[list[int], list[int]]]  # (host page ids, device page ids) per copy
    calls: list[Arrays]  # each call's padded step and sampling arrays


def initialize(coordinator_address: str | None, num_processes: int, process_id: int) -> None:
    """Joins the JAX runtime of ``num_processes`` processes (nothing to do for one process)."""
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(f"process id {process_id} is not in 0..{num_processes - 1} (--num-processes {num_processes})")
    if num_processes == 1:
        return
    if not coordinator_address or ":" not in coordinator_address:
        raise ValueError(f"multi-process serving needs --coordinator-address host:port, got {coordinator_address!r}")
    jax.distributed.initialize(coordinator_address, num_processes=num_processes, process_id=process_id)


def is_leader() -> bool:
    """This process schedules (process 0 of a multi-process run, or the only process)."""
    return jax.process_index() == 0


def encode(plan: StepPlan) -> np.ndarray:
    """The plan as one int32 vector: swap counts and ids, then per call (rows, q_len, every array's bits)."""
    parts: list[np.ndarray] = []

    def ints(*values) -> None:
        parts.append(np.asarray(values, np.int32))

    for copies in (plan.swap_out, plan.swap_in):
        ints(len(copies))
        for first, second in copies:
            ints(len(first), *first, *second)
    ints(len(plan.calls))
    for arrays in plan.calls:
        ints(*arrays[0].token_ids.shape)
        for leaf in jax.tree.leaves(arrays):
            leaf = np.asarray(leaf)
            if leaf.dtype.itemsize != 4:
                raise ValueError(f"step arrays must hold 4-byte values to be broadcast, got {leaf.dtype}")
            parts.append(leaf.reshape(-1).view(np.int32))
    return np.concatenate(parts)


def decode(payload: np.ndarray, empty_arrays: Callable[[int, int], Arrays]) -> StepPlan:
    """The inverse of ``encode``; ``empty_arrays(q_len, rows)`` gives a call's arrays (their shapes and dtypes)."""
    at = 0

    def take(n: int) -> np.ndarray:
        nonlocal at
        at += n
        return payload[at - n : at]

    copies: list[list[tuple[list[int], list[int]]]] = []
    for _ in range(2):
        copies.append([])
        for _ in range(int(take(1)[0])):
            n = int(take(1)[0])
            copies[-1].append((take(n).tolist(), take(n).tolist()))
    calls = []
    for _ in range(int(take(1)[0])):
        rows, q_len = take(2).tolist()
        leaves, treedef = jax.tree.flatten(empty_arrays(q_len, rows))
        filled = [take(leaf.size).view(leaf.dtype).reshape(leaf.shape) for leaf in map(np.asarray, leaves)]
        calls.append(jax.tree.unflatten(treedef, filled))
    return StepPlan(copies[0], copies[1], calls)


def _padded_length(length: int) -> int:
    size = _MIN_PAYLOAD
    while size < length:
        size *= 2
    return size


def _broadcast(values: np.ndarray) -> np.ndarray:
    """Process 0's ``values`` on every process (the others pass zeros of the same shape)."""
    return np.asarray(multihost_utils.broadcast_one_to_all(values, is_source=is_leader()))


def send(plan: StepPlan) -> None:
    """Process 0: broadcasts one step's plan to the followers."""
    payload = encode(plan)
    _broadcast(np.array([_STEP, len(payload)], np.int32))
    padded = np.zeros(_padded_length(len(payload)), np.int32)
    padded[: len(payload)] = payload
    _broadcast(padded)


def release_followers() -> None:
    """Process 0 of a multi-process run: tells the other processes to stop following (else nothing)."""
    if jax.process_count() > 1 and is_leader():
        _broadcast(np.array([_STOP, 0], np.int32))


def receive(empty_arrays: Callable[[int, int], Arrays]) -> StepPlan | None:
    """A follower: the next step's plan from process 0, or None once it stops."""
    kind, length = _broadcast(np.zeros(2, np.int32)).tolist()
    if kind == _STOP:
        return None
    return decode(_broadcast(np.zeros(_padded_length(length), np.int32))[:length], empty_arrays)


def follow(runner) -> int:
    """A follower: runs process 0's steps on this process's devices until it stops; returns the steps run."""
    steps = 0
    while (plan := receive(runner.empty_arrays)) is not None:
        runner.run_plan(plan)
        steps += 1
    return steps

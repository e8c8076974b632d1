"""What this machine's memory and arithmetic allow a decoder, measured in the same run as the engines.

``measure_machine`` times a read of a large f32 array (bandwidth) and a large f32 matmul (arithmetic peak) with
numpy. A generation's roofline time is, per step, the larger of reading every weight byte once and doing
2 x parameters FLOPs per token of the step; a wave is one prefill step over its prompts and then one decode step
per further token. The KV cache's bytes and attention's FLOPs are left out (small at these contexts), so the
roofline is an upper bound on tokens per second.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

READ_BYTES = 512 * 2**20
MATMUL_SIZE = 2048


@dataclass(frozen=True)
class Machine:
    bandwidth: float  # bytes/s, reading
    flops: float  # f32 FLOP/s, matmul


def _best_seconds(fn, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure_machine() -> Machine:
    data = np.ones(READ_BYTES // 4, np.float32)
    read = _best_seconds(lambda: data.sum(dtype=np.float32))
    a = np.ones((MATMUL_SIZE, MATMUL_SIZE), np.float32)
    matmul = _best_seconds(lambda: a @ a)
    return Machine(bandwidth=READ_BYTES / read, flops=2 * MATMUL_SIZE**3 / matmul)


def roofline_seconds(
    machine: Machine, weight_bytes: int, parameters: int, waves: list[list[int]], max_tokens: int
) -> float:
    """Lower bound of the time to generate ``max_tokens`` per prompt for each wave (a list of prompt lengths)."""

    def step(tokens: int) -> float:
        return max(weight_bytes / machine.bandwidth, 2 * parameters * tokens / machine.flops)

    return sum(step(sum(wave)) + (max_tokens - 1) * step(len(wave)) for wave in waves)

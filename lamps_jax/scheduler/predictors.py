"""Predictors the LAMPS policy ranks with: API durations per API type and output lengths (pure Python).

``ApiTimePredictor`` learns from the durations of finished calls (``observe``) and predicts a call's
duration at its start (the per-type mean) or, while it runs, its remaining time given the time
already elapsed. Length predictors map a segment's true length and a stable key to a prediction;
``NoisyOraclePredictor`` is the paper's benchmark method (true length with Gaussian relative noise).
"""

from __future__ import annotations

import random
import statistics
from collections import deque
from typing import Protocol

MIN_REMAINING_FRACTION = 0.1  # an overrunning call is predicted to need at least this fraction of its mean


class ApiTimePredictor:
    """Mean duration per API type over its last ``history`` calls; ``default`` seconds for an unseen type."""

    def __init__(self, default: float = 1.0, history: int = 1000) -> None:
        if default < 0:
            raise ValueError(f"default API time must be >= 0, got {default}")
        if history < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        self.default = default
        self.history = history
        self._durations: dict[str, deque[float]] = {}

    def observe(self, api_type: str, duration: float) -> None:
        if duration < 0:
            raise ValueError(f"an API call cannot take {duration} seconds")
        self._durations.setdefault(api_type, deque(maxlen=self.history)).append(duration)

    def observed(self, api_type: str) -> tuple[float, ...]:
        """The durations kept for ``api_type`` (its last ``history`` calls), oldest first; empty when none."""
        return tuple(self._durations.get(api_type, ()))

    def predict(self, api_type: str) -> float:
        """The mean observed duration of ``api_type``; ``default`` when none was observed."""
        durations = self._durations.get(api_type)
        return statistics.fmean(durations) if durations else self.default

    def predict_remaining(self, api_type: str, elapsed: float) -> float:
        """Residual life of a call running for ``elapsed`` seconds: mean of (d - elapsed) over observed d > elapsed.

        When no observed call lasted longer (or none was observed), the call is overrunning every
        precedent: the estimate falls back to ``max(predict(api_type) - elapsed, 0.1 * predict(api_type))``,
        so it never reaches zero while the call is still running.
        """
        if elapsed < 0:
            raise ValueError(f"elapsed time must be >= 0, got {elapsed}")
        longer = [d - elapsed for d in self._durations.get(api_type, ()) if d > elapsed]
        if longer:
            return statistics.fmean(longer)
        mean = self.predict(api_type)
        return max(mean - elapsed, MIN_REMAINING_FRACTION * mean)


class LengthPredictor(Protocol):
    def predict(self, true_tokens: int, key: str) -> int:
        """Predicted length of a segment whose true length is ``true_tokens``.

        ``key`` = f"{req_id}:{segment_index}" identifies the segment, so repeated calls agree.
        """
        ...


class NoisyOraclePredictor:
    """true·(1 + ε) with ε ~ N(0, relative_error), rounded and clipped at >= 1; ε is fixed per (seed, key)."""

    def __init__(self, relative_error: float = 0.0, seed: int = 0) -> None:
        if relative_error < 0:
            raise ValueError(f"relative_error must be >= 0, got {relative_error}")
        self.relative_error = relative_error
        self.seed = seed

    def predict(self, true_tokens: int, key: str) -> int:
        if true_tokens < 0:
            raise ValueError(f"true_tokens must be >= 0, got {true_tokens}")
        noise = random.Random(f"{self.seed}:{key}").gauss(0.0, self.relative_error)
        return max(1, round(true_tokens * (1 + noise)))

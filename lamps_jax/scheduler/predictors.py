"""Predictors the LAMPS policy ranks with: API durations per API type and output lengths (pure Python).

``ApiTimePredictor`` learns from the durations of finished calls (``observe``) and predicts a call's
duration at its start (the per-type mean) or, while it runs, its remaining time given the time
already elapsed. Length predictors map a segment's true length and a stable key to a prediction;
``NoisyOraclePredictor`` is the paper's benchmark method (true length with Gaussian relative noise);
``MeanLengthPredictor`` knows no request (the running mean of observed segment lengths);
``PostedLengthPredictor`` returns what a learned head posted for the segment (``lamps_jax.predictors``:
the head runs outside the scheduler, on the serving model's hidden states) and the running mean before that.
``make_length_predictor`` builds one from a ``--length-predictor`` spec.
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


LENGTH_PREDICTOR_SPECS = "oracle | oracle-noise:X | mean | learned:PATH"
DEFAULT_SEGMENT_TOKENS = 100  # a mean predictor's prior until it observes a segment


def parse_length_predictor(spec: str) -> tuple[str, str | float | None]:
    """(kind, argument) of a spec: oracle, oracle-noise:X (relative noise X >= 0), mean or learned:PATH."""
    kind, _, argument = spec.partition(":")
    if kind in ("oracle", "mean") and not argument:
        return kind, None
    if kind == "oracle-noise" and argument:
        try:
            noise = float(argument)
        except ValueError:
            noise = -1.0
        if not noise >= 0:
            raise ValueError(f"oracle-noise takes a relative noise >= 0 (oracle-noise:0.3), got {argument!r}")
        return kind, noise
    if kind == "learned" and argument:
        return kind, argument
    raise ValueError(f"a length predictor is one of {LENGTH_PREDICTOR_SPECS}, got {spec!r}")


class MeanLengthPredictor:
    """The mean length of the segments observed so far (``observe``), whatever the request; ``prior`` before any."""

    def __init__(self, prior: float = DEFAULT_SEGMENT_TOKENS) -> None:
        if not prior > 0:
            raise ValueError(f"the prior length must be > 0, got {prior}")
        self.prior = prior
        self._total = 0
        self._count = 0

    def observe(self, num_tokens: int) -> None:
        """A segment that ended after decoding ``num_tokens`` tokens (at its API call or at the request's end)."""
        if num_tokens < 0:
            raise ValueError(f"a segment cannot decode {num_tokens} tokens")
        self._total += num_tokens
        self._count += 1

    @property
    def mean(self) -> float:
        return self._total / self._count if self._count else self.prior

    def predict(self, true_tokens: int, key: str) -> int:
        return max(1, round(self.mean))


class PostedLengthPredictor(MeanLengthPredictor):
    """The length posted for a segment's key (a learned head's prediction); the running mean for other keys.

    The head runs outside the scheduler (it needs the serving model's hidden states, so JAX): the engine
    posts its prediction once the hidden state the segment starts from comes back from the runner.
    """

    def __init__(self, prior: float = DEFAULT_SEGMENT_TOKENS) -> None:
        super().__init__(prior)
        self._posted: dict[str, int] = {}

    def post(self, key: str, num_tokens: float) -> None:
        """The predicted length of segment ``key`` (f"{req_id}:{segment_index}")."""
        self._posted[key] = max(1, round(num_tokens))

    def forget(self, req_id: str, last_segment_index: int) -> None:
        """Drops a finished request's posts (segments 0..``last_segment_index``)."""
        for index in range(last_segment_index + 1):
            self._posted.pop(f"{req_id}:{index}", None)

    def predict(self, true_tokens: int, key: str) -> int:
        posted = self._posted.get(key)
        return posted if posted is not None else super().predict(true_tokens, key)


def make_length_predictor(spec: str, length_noise: float = 0.0, seed: int = 0) -> LengthPredictor:
    """The predictor a spec names; ``length_noise`` is the older flag's noise of ``oracle`` (oracle-noise:X)."""
    kind, argument = parse_length_predictor(spec)
    if kind != "oracle" and length_noise:
        raise ValueError(f"length_noise={length_noise} applies to the oracle predictor only, not {spec!r}")
    if kind == "oracle":
        return NoisyOraclePredictor(length_noise, seed)
    if kind == "oracle-noise":
        return NoisyOraclePredictor(float(argument), seed)
    return MeanLengthPredictor() if kind == "mean" else PostedLengthPredictor()

"""The engine's side of length prediction: segment hidden states in, predicted and observed lengths out.

``SegmentLengths`` sits in ``LLMEngine``. For requests that ask for hidden states it keeps the state each
segment starts from (``Request.segment_hidden_states``: the prompt's last token once the prefill samples,
then the last state before each API call). With a learned head (``--length-predictor learned:PATH``) it
runs the head on that state on the host CPU (the state is on the host already: no device round trip)
and posts the predicted length to the policy's ``PostedLengthPredictor``; the first segment's prediction
arrives after the prompt's prefill, so it has the policy re-plan the running request then (its call
strategy; its score if it is preempted). Each ended segment's length goes to the predictor's running
mean, and (state, length) pairs into ``examples`` for online updating off the hot path (``OnlineUpdater``).
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import jax
import numpy as np

from lamps_jax.model.registry import LoadedModel
from lamps_jax.request import Request, RequestStatus
from lamps_jax.scheduler.predictors import MeanLengthPredictor, PostedLengthPredictor, parse_length_predictor

if TYPE_CHECKING:
    from lamps_jax.predictors.checkpoint import TrainedHead

MAX_EXAMPLES = 10_000  # (state, length) pairs kept for online updating, newest


class HostLengthHead:
    """A trained head run on the host CPU, one jitted call per hidden state; ``params`` can be swapped live."""

    def __init__(self, head: TrainedHead) -> None:
        from lamps_jax.predictors.head import predict_tokens  # flax: imported only when a head is used

        self.spec = head.spec
        self.mean_tokens = head.mean_tokens
        self._cpu = jax.devices("cpu")[0]
        self.params = jax.device_put(head.params, self._cpu)
        self._predict = jax.jit(functools.partial(predict_tokens, self.spec))

    def predict(self, hidden: np.ndarray) -> float:
        """Predicted length of the segment that starts from ``hidden`` [D]."""
        return float(self._predict(self.params, jax.device_put(hidden[None], self._cpu))[0])

    def predict_batch(self, hidden: np.ndarray) -> np.ndarray:
        """Predicted lengths [B] for hidden states [B, D] (one call for a whole step's predictions)."""
        return np.asarray(self._predict(self.params, jax.device_put(hidden, self._cpu)))

    def set_params(self, params: dict) -> None:
        self.params = jax.device_put(params, self._cpu)


class SegmentLengths:
    def __init__(
        self,
        lengths: MeanLengthPredictor | None = None,
        head: HostLengthHead | None = None,
        replan: Callable[[Request], object] | None = None,
    ) -> None:
        if head is not None and not isinstance(lengths, PostedLengthPredictor):
            raise ValueError("a learned head posts to a PostedLengthPredictor: set length_predictor='learned:PATH'")
        self.lengths = lengths
        self.head = head
        self.replan = replan
        self.examples: deque[tuple[np.ndarray, int]] = deque(maxlen=MAX_EXAMPLES)
        self._starts: dict[str, int] = {}  # req_id -> tokens generated when its current segment began

    @property
    def wants_hidden_states(self) -> bool:
        return self.head is not None

    def on_sampled(self, request: Request, hidden: np.ndarray | None) -> None:
        """After a step sampled for ``request``; ``hidden`` is its row's state when it asked for it."""
        if hidden is None:
            return
        request.hidden_state = hidden
        if not request.segment_hidden_states:  # the prefill of the prompt just sampled
            request.segment_hidden_states.append(hidden)
            self._starts[request.req_id] = 0
            if self._post(request) and self.replan is not None:
                self.replan(request)

    def on_pause(self, request: Request) -> None:
        """The request paused for an API call: its segment ended; the next starts after the call."""
        self._end_segment(request)
        self._starts[request.req_id] = request.num_generated_tokens
        if request.return_hidden_states and request.hidden_state is not None:
            request.segment_hidden_states.append(request.hidden_state)
            self._post(request)

    def on_finish(self, request: Request) -> None:
        if request.status in (RequestStatus.FINISHED_STOPPED, RequestStatus.FINISHED_LENGTH):  # not cut short
            self._end_segment(request)
        self._starts.pop(request.req_id, None)
        if isinstance(self.lengths, PostedLengthPredictor):
            self.lengths.forget(request.req_id, request.segment_index)

    def _end_segment(self, request: Request) -> None:
        num_tokens = request.num_generated_tokens - self._starts.get(request.req_id, 0)
        if self.lengths is not None:
            self.lengths.observe(num_tokens)
        if request.segment_hidden_states and request.req_id in self._starts:
            self.examples.append((request.segment_hidden_states[-1], num_tokens))

    def _post(self, request: Request) -> bool:
        if self.head is None:
            return False
        key = f"{request.req_id}:{request.segment_index}"
        self.lengths.post(key, self.head.predict(request.segment_hidden_states[-1]))
        return True


class OnlineUpdater:
    """Fine-tunes a live head on the engine's recent (state, length) pairs in a background thread.

    ``submit`` snapshots the examples and returns at once; when the fine-tuning ends, the head's params are
    swapped in one assignment (a prediction in flight uses the old or the new, never a mix).
    """

    def __init__(self, head: HostLengthHead, steps: int = 50, learning_rate: float = 1e-4) -> None:
        self.head = head
        self.steps = steps
        self.learning_rate = learning_rate
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="length-head-update")

    def submit(self, examples: deque[tuple[np.ndarray, int]]) -> Future:
        from lamps_jax.predictors.train import fine_tune

        pairs = list(examples)
        if not pairs:
            raise ValueError("no completed segments to learn from yet")
        features = np.stack([state for state, _ in pairs])
        lengths = np.array([n for _, n in pairs], np.int32)

        def update() -> None:
            params = fine_tune(self.head.spec, self.head.params, features, lengths, self.steps, self.learning_rate)
            self.head.set_params(params)

        return self._pool.submit(update)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def segment_lengths_for(
    spec: str, scheduler, model: LoadedModel, model_name: str = "the serving model"
) -> SegmentLengths:
    """The engine's ``SegmentLengths`` for a ``--length-predictor`` spec and the scheduler's policy."""
    lengths = getattr(scheduler.policy, "lengths", None)
    kind, path = parse_length_predictor(spec)
    if kind in ("learned", "mean") and not isinstance(lengths, MeanLengthPredictor):
        raise ValueError(f"policy {scheduler.policy.name!r} takes no length predictor (lamps and lamps_plus do)")
    if kind != "learned":
        return SegmentLengths(lengths if isinstance(lengths, MeanLengthPredictor) else None)
    if model.params is None:
        raise ValueError(
            "length_predictor learned:PATH reads the serving model's hidden states; a simulated engine has none "
            "(lamps-jax bench-length-predictor posts a head's predictions to the simulator ahead instead)"
        )
    from lamps_jax.predictors.checkpoint import load_head  # orbax: imported only when a head is used
    from lamps_jax.predictors.identity import model_identity

    head = HostLengthHead(load_head(path, model_identity(model_name, model.config, model.params)))
    lengths.prior = head.mean_tokens
    plan = getattr(scheduler.policy, "plan", None)

    def replan(request: Request) -> None:
        if plan is not None and request.status is RequestStatus.RUNNING:
            plan(request, scheduler)

    return SegmentLengths(lengths, head, replan)

"""OutputProcessor: per-request output text, stop strings and per-step deltas, next to the engine.

The scheduler appends token ids; this turns them into text incrementally (``OutputText``), finds the
stop strings the model wrote, and after each step gives every request that advanced a
``RequestDelta``: its new token ids and text since the last delta (where API results lie in that text), and its
``RequestOutput`` once it finished. Concatenated, a request's deltas give its final text.
"""

from __future__ import annotations

from dataclasses import dataclass

from lamps_jax.detokenizer import Decode, OutputText
from lamps_jax.request import Request, RequestOutput, RequestStatus

FINISH_REASONS = {
    RequestStatus.FINISHED_STOPPED: "stop",
    RequestStatus.FINISHED_LENGTH: "length",
    RequestStatus.FINISHED_ABORTED: "abort",
    RequestStatus.FINISHED_ERROR: "error",
}


def _no_text(token_ids: list[int]) -> str:
    return ""


@dataclass(frozen=True)
class RequestDelta:
    req_id: str
    token_ids: list[int]  # output tokens since the last delta: sampled ones and appended API results
    text: str  # their text (ending before a stop string)
    output: RequestOutput | None = None  # the whole output, once the request finished
    result_spans: tuple[tuple[int, int], ...] = ()  # [start, end) of API results' text within ``text``

    @property
    def finished(self) -> bool:
        return self.output is not None


class OutputProcessor:
    """``decode`` None: a model without a tokenizer (the simulator's); outputs are token ids only."""

    def __init__(self, decode: Decode | None) -> None:
        self._decode = decode
        self._texts: dict[str, OutputText] = {}
        self._tokens_sent: dict[str, int] = {}
        self._text_sent: dict[str, int] = {}

    def add(self, request: Request) -> None:
        self._texts[request.req_id] = OutputText(self._decode or _no_text, request.sampling_params.stop)
        self._tokens_sent[request.req_id] = self._text_sent[request.req_id] = 0

    def text(self, req_id: str) -> OutputText:
        return self._texts[req_id]

    def advance(self, request: Request) -> str:
        """Decodes the request's new tokens; returns their text. A stop string sets ``stop_reason``."""
        if self._decode is None:
            return ""
        text = self._texts[request.req_id]
        new = text.update(request.output_token_ids, request.result_end)
        if text.stop_at is not None and request.stop_reason is None:
            request.stop_reason = text.stop_string
        return new

    def delta(self, request: Request) -> RequestDelta:
        """What the request added since its last delta; a finished request's state is dropped."""
        req_id, text = request.req_id, self._texts[request.req_id]
        output = None
        if request.is_finished:
            if self._decode is not None:
                text.finish(request.output_token_ids)
            output = self.output(request)
        end = len(text.final_text) if output is not None else text.stream_end()
        sent = self._text_sent[req_id]
        new_text = text.text[sent:end]
        token_ids = request.output_token_ids[self._tokens_sent[req_id] :]
        spans = tuple(
            (max(start, sent) - sent, min(stop, end) - sent)
            for start, stop in text.result_spans
            if sent < stop and start < end
        )
        self._text_sent[req_id] += len(new_text)
        self._tokens_sent[req_id] += len(token_ids)
        if output is not None:
            del self._texts[req_id], self._tokens_sent[req_id], self._text_sent[req_id]
        return RequestDelta(req_id, token_ids, new_text, output, spans)

    def output(self, request: Request) -> RequestOutput:
        end = request.events[-1][1] if request.is_finished else None
        first = request.first_token_time
        return RequestOutput(
            req_id=request.req_id,
            prompt=request.prompt,
            prompt_token_ids=request.prompt_token_ids,
            text=self._texts[request.req_id].final_text,
            token_ids=list(request.output_token_ids),
            finished=request.is_finished,
            finish_reason=FINISH_REASONS.get(request.status),
            stop_reason=request.stop_reason,
            error=request.error,
            time_to_first_token=None if first is None else first - request.arrival_time,
            latency=None if end is None else end - request.arrival_time,
            num_api_calls=request.num_api_calls,
            num_generated_tokens=request.num_generated_tokens,
            timeline=tuple((status.value, t) for status, t in request.events),
            api_calls=tuple(request.api_call_records),
            result_spans=tuple(self._texts[request.req_id].result_spans),
        )

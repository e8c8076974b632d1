"""Incremental detokenizing of a request's output: each token is decoded once, in a window of a few.

``OutputText`` follows a request's ``output_token_ids`` as they grow. New tokens are decoded in a
window that starts at the last safe point (``prefix_offset``): the text of ``ids[prefix:]`` minus
the text of ``ids[prefix:read]`` is what the new tokens add, so a tokenizer that drops a leading
space at a window start drops it on both sides. While the window ends inside a multi-byte character
(the text ends with U+FFFD) nothing is emitted; the next token completes it. The cost per token is
independent of the output's length.

The text covers everything in the output, API results included (the text as the model saw it; where each
result's text lies is in ``result_spans``), but stop strings are searched only in what the model
generated since the last result, and only in the new tail (the new text plus the ``len(stop) - 1``
characters before it). A stream holds back the model's last ``len(stop) - 1`` characters until they
cannot begin a stop string (``stream_end``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Decode = Callable[[list[int]], str]

_INCOMPLETE = "\ufffd"  # what a decoder gives for the first bytes of a character cut off by the window


class OutputText:
    def __init__(self, decode: Decode, stops: Sequence[str] = ()) -> None:
        self._decode = decode
        self.stops = tuple(stops)
        self.text = ""
        self.generated_start = 0  # where the model's text since the last API result begins
        self.stop_at: int | None = None  # where the text ends: just before a stop string the model wrote
        self.stop_string: str | None = None  # that stop string
        self._prefix_offset = 0
        self._read_offset = 0
        self._result_end = 0  # output tokens up to the end of the last API result
        self._seen = 0  # output tokens at the last update: the model's, when a result follows them
        self.result_spans: list[tuple[int, int]] = []  # [start, end) of each API result's text in ``text``

    def update(self, token_ids: list[int], result_end: int) -> str:
        """Catches up with the output ``token_ids``, whose API results end at ``result_end``; returns the
        new text, up to a stop string the model wrote (then ``stop_at`` is set; the earliest stop wins)."""
        new = ""
        if result_end > self._result_end:  # an API result came after the model's tokens: its text, then the model's
            new = self._advance(token_ids[: self._seen], flush=True)
            start = len(self.text)
            new += self._advance(token_ids[:result_end], flush=True)
            self.result_spans.append((start, len(self.text)))
            self._result_end, self.generated_start = result_end, len(self.text)
        self._seen = len(token_ids)
        before = len(self.text)
        generated = self._advance(token_ids, flush=False)
        if self.stops and generated:
            longest = max(len(stop) for stop in self.stops)
            start = max(self.generated_start, before - longest + 1)
            hits = [(at, stop) for stop in self.stops if (at := self.text.find(stop, start)) >= 0]
            if hits:
                self.stop_at, self.stop_string = min(hits)
                return new + self.text[before : self.stop_at]
        return new + generated

    def finish(self, token_ids: list[int]) -> str:
        """Emits whatever is left (an incomplete character at the very end included)."""
        if self.stop_at is not None:
            return ""
        return self._advance(token_ids, flush=True)

    def stream_end(self) -> int:
        """How much of the text may be streamed now: up to a stop string that ended it; otherwise all but
        the model's last ``len(longest stop) - 1`` characters, which may still begin a stop string."""
        if self.stop_at is not None:
            return self.stop_at
        held = max((len(stop) for stop in self.stops), default=1) - 1
        return max(self.generated_start, len(self.text) - held)

    @property
    def final_text(self) -> str:
        return self.text if self.stop_at is None else self.text[: self.stop_at]

    def _advance(self, token_ids: list[int], flush: bool) -> str:
        if len(token_ids) <= self._read_offset:
            return ""
        window = token_ids[self._prefix_offset :]
        known = self._decode(token_ids[self._prefix_offset : self._read_offset])
        full = self._decode(window)
        if not flush and (len(full) <= len(known) or full.endswith(_INCOMPLETE)):
            return ""  # nothing new yet, or a character still cut off
        new = full[len(known) :]
        self._prefix_offset, self._read_offset = self._read_offset, len(token_ids)
        self.text += new
        return new

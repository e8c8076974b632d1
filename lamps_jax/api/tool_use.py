"""A request's own tool calling: the calls it makes itself, found in its text, and how their results are written.

A server gives each chat request with server-side tools a ``ToolUse``: after every token, ``detect`` reads the
model's text since the last result and returns the call it has just completed (the engine then pauses the request
under its policy's KV strategy and runs the call in its API executor); when the call returns, ``result_text`` is the
text appended to the context (the chat template's tool message and the assistant's turn opened again), so that the
model continues as if the conversation had gone on. Errors and timeouts are results too: the model reads them.
"""

from __future__ import annotations

from typing import Protocol

from lamps_jax.detokenizer import OutputText
from lamps_jax.request import ApiCall, Request


class ToolUse(Protocol):
    def detect(self, text: OutputText) -> ApiCall | None:
        """The call the model's text since the last result has just completed, or None."""

    def result_text(self, call: ApiCall, result: str) -> str:
        """The text appended after ``call`` returned ``result`` (its answer, or ``"error: ..."``)."""


def tool_use_trigger(request: Request, text: OutputText, new_text: str) -> ApiCall | None:
    """The interception trigger of requests that carry a ``ToolUse``."""
    if request.tool_use is None or not new_text:
        return None
    return request.tool_use.detect(text)

"""The ``ToolUse`` of a chat request with server-side tools: the request's own parser finds each completed call to
one of the server's tools in the model's text since the last result, and the chat template writes the result back
(``ToolTurns``). Calls to other tools are left to the output (they are the client's)."""

from __future__ import annotations

import json
from collections.abc import Collection

from lamps_jax.detokenizer import OutputText
from lamps_jax.request import ApiCall
from lamps_jax.server.tool_parsers import ToolCallDelta, ToolCallParser, ToolCallStream
from lamps_jax.server.tool_turns import ToolTurns


class ServerToolUse:
    def __init__(self, parser: ToolCallParser, tools: Collection[str], turns: ToolTurns, opening: str = "") -> None:
        self._parser, self._tools, self._turns = parser, frozenset(tools), turns
        self._opening = opening  # the forced start of the output, which the model's text continues
        self._stream: ToolCallStream | None = None
        self._start = -1  # where the text read by the stream starts (the model's text since the last result)
        self._read = 0  # how far the text is read

    def detect(self, text: OutputText) -> ApiCall | None:
        if text.generated_start != self._start:  # a result came: the model's text begins anew
            self._stream = self._parser.stream(self._tools)
            self._start = self._read = text.generated_start
            if self._start == 0 and self._opening:
                self._stream.feed(self._opening)
        new, self._read = text.text[self._read :], len(text.text)
        name = None
        for delta in self._stream.feed(new):
            if isinstance(delta, ToolCallDelta) and delta.name is not None:
                name = delta.name
            elif isinstance(delta, ToolCallDelta) and name is not None:
                return ApiCall(name=name, arguments=json.loads(delta.arguments))
        return None

    def result_text(self, call: ApiCall, result: str) -> str:
        return self._turns.text(call, result)

"""The client's view of a chat output: the model's own text (API results left out) read by the request's tool-call
parser, as a whole message or as streamed deltas.

Calls to the server's tools ran inside the request: they are not ``tool_calls`` (those are the client's to run)
but are listed, with what they answered, in the ``server_tool_calls`` extension field of the message (whole) or of
the last chunk's delta (streamed). Client calls are numbered among themselves. With a forced opening (``required``
or a named function) the output must hold a call: one that does not parse is an ``invalid_tool_call`` error.
"""

from __future__ import annotations

import json

from lamps_jax.request import RequestOutput
from lamps_jax.server.errors import ApiError
from lamps_jax.server.tool_choice import ToolPlan
from lamps_jax.server.tool_parsers import ContentDelta, Delta, ParsedOutput, ToolCall, ToolCallDelta


def model_text(text: str, result_spans: tuple[tuple[int, int], ...]) -> str:
    """``text`` without the spans of API results."""
    pieces, start = [], 0
    for begin, end in result_spans:
        pieces.append(text[start:begin])
        start = end
    return "".join(pieces) + text[start:]


def server_tool_calls(output: RequestOutput) -> list[dict]:
    """The server-side calls the request made, in order, with their outcomes."""
    return [
        {
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
            "status": call.status,
            "output": call.result,
            "error": call.error,
            "duration_s": call.duration,
            "kv_strategy": call.strategy,
        }
        for call in output.api_calls
    ]


def tool_call_json(call: ToolCall) -> dict:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


class ChatOutputReader:
    """Feed the output's deltas (``feed``), then ``finish``; each returns the client's deltas."""

    def __init__(self, plan: ToolPlan) -> None:
        self._plan = plan
        self._stream = plan.parser.stream(plan.known_tools) if plan.parser is not None else None
        self._content: list[str] = []
        self._client_index: dict[int, int | None] = {}  # parser's call index -> the client's (None: a server call)
        if self._stream is not None and plan.forced_opening:
            self._stream.feed(plan.forced_opening)

    def feed(self, text: str, result_spans: tuple[tuple[int, int], ...] = ()) -> list[Delta]:
        text = model_text(text, result_spans)
        if self._stream is None:
            self._content.append(text)
            return [ContentDelta(text)] if text else []
        return self._for_client(self._stream.feed(text))

    def finish(self) -> list[Delta]:
        """The last deltas; raises ``ApiError`` when a forced call did not come out as one."""
        if self._stream is None:
            return []
        deltas = self._for_client(self._stream.finish())
        parsed = self._stream.result()
        if self._plan.forced_opening and not parsed.tool_calls:
            raise ApiError(
                500,
                "tool_choice required a tool call, but the model's output is not one: " + "; ".join(parsed.errors),
                "invalid_tool_call",
                type="server_error",
            )
        return deltas

    @property
    def has_server_tools(self) -> bool:
        return bool(self._plan.server_tools)

    def client_view(self) -> ParsedOutput:
        """Content and client calls of the whole output (after ``finish``)."""
        if self._stream is None:
            return ParsedOutput("".join(self._content), [], [])
        parsed = self._stream.result()
        calls = [call for call in parsed.tool_calls if call.name not in self._plan.server_tools]
        return ParsedOutput(parsed.content, calls, parsed.errors)

    def _for_client(self, deltas: list[Delta]) -> list[Delta]:
        shown: list[Delta] = []
        for delta in deltas:
            if isinstance(delta, ToolCallDelta):
                if delta.index not in self._client_index:
                    client_calls = [i for i in self._client_index.values() if i is not None]
                    is_server = delta.name in self._plan.server_tools
                    self._client_index[delta.index] = None if is_server else len(client_calls)
                index = self._client_index[delta.index]
                if index is None:
                    continue
                delta = ToolCallDelta(index, delta.id, delta.name, delta.arguments)
            shown.append(delta)
        return shown

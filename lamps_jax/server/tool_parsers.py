"""Tool-call parsers: a model's output text as OpenAI content and tool calls, whole or streamed.

Formats, chosen by name (``get_tool_parser``):

- ``hermes`` (Hermes, Qwen2.5, Qwen3): ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks, any
  number, anywhere; the text around them is content. A block the output ends in is still a call if its JSON is
  complete (a ``</tool_call>`` stop string leaves it so).
- ``llama3_json`` (Llama 3.x): an output that starts, after whitespace, with ``<|python_tag|>`` or ``{`` is a list
  of ``{"name": ..., "parameters": {...}}`` objects separated by ``;``; text after the last one (not opened by a
  ``;``) is content, and so is any output that starts otherwise.

A call's arguments are its ``"arguments"``, else its ``"parameters"``: a JSON object, or a JSON string holding one;
a call with neither takes ``{}``. ``ToolCall.arguments`` is that object serialized again as JSON text (OpenAI's
``function.arguments``).

A malformed call (JSON that is invalid or cut off, not an object, no ``"name"`` string, arguments that are not an
object) or a call to a name outside ``known_tools`` is not a tool call: its text stays in the content verbatim,
markers included, so a client sees what the model wrote, and ``errors`` says why as ``"<code>: <detail>"``, the
code one of ``ERROR_CODES``. Whitespace between content and a valid call is dropped.

Streaming: ``parse`` is a stream fed the whole text, and a stream's result does not depend on how its text was
split. Text that may still belong to a call (a partial tag, an opening ``{`` of ``llama3_json``, whitespace before
a possible call) is held back until decided, so every content fragment is part of the final content. A call is
announced once it is complete and valid, as a delta with its index, id and name followed by one with its whole
arguments: a stream never announces a call that the final parse rejects, at the cost of arguments arriving in one
piece rather than token by token.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

ERROR_CODES = ("invalid_json", "unterminated", "not_an_object", "missing_name", "invalid_arguments", "unknown_tool")
_ARGUMENT_KEYS = ("arguments", "parameters")
_EXCERPT_CHARS = 120


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text of the arguments object


@dataclass(frozen=True)
class ParsedOutput:
    content: str | None  # None when there is no content
    tool_calls: list[ToolCall]
    errors: list[str]


@dataclass(frozen=True)
class ContentDelta:
    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of the call at ``index``: its first delta carries ``id`` and ``name``, the next ones ``arguments``."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


Delta = ContentDelta | ToolCallDelta


def finish_reason(parsed: ParsedOutput, engine_reason: str = "stop") -> str:
    """OpenAI's finish_reason: ``"tool_calls"`` when the output holds a valid call, else the engine's reason."""
    return "tool_calls" if parsed.tool_calls else engine_reason


@dataclass(frozen=True)
class _Block:
    """A would-be call: ``raw`` is its text as generated, markers included, and ``body`` its JSON part."""

    raw: str
    body: str
    terminated: bool  # False when the output ended inside it


_Piece = str | _Block  # a piece of the output: text, or a would-be call


class _Splitter(Protocol):
    """Cuts an output into pieces as its text arrives, holding back what is not yet decided."""

    def feed(self, text: str) -> list[_Piece]: ...

    def finish(self) -> list[_Piece]: ...


def _partial_tag_length(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a proper beginning of ``tag``."""
    for length in range(min(len(text), len(tag) - 1), 0, -1):
        if text.endswith(tag[:length]):
            return length
    return 0


class _HermesSplitter:
    """``<tool_call>`` opens a block and ``</tool_call>`` closes it; a tail that may open one is held back."""

    OPEN, CLOSE = "<tool_call>", "</tool_call>"

    def __init__(self) -> None:
        self._buffer = ""  # undecided text, or the body of the open block
        self._in_block = False
        self._close_from = 0  # where a close tag may start in the buffered body

    def feed(self, text: str) -> list[_Piece]:
        self._buffer += text
        pieces: list[_Piece] = []
        while True:
            if self._in_block:
                end = self._buffer.find(self.CLOSE, self._close_from)
                if end < 0:
                    self._close_from = max(0, len(self._buffer) - len(self.CLOSE) + 1)
                    return pieces
                body = self._buffer[:end]
                pieces.append(_Block(self.OPEN + body + self.CLOSE, body, terminated=True))
                self._buffer = self._buffer[end + len(self.CLOSE) :]
                self._in_block, self._close_from = False, 0
            else:
                start = self._buffer.find(self.OPEN)
                if start < 0:
                    decided = len(self._buffer) - _partial_tag_length(self._buffer, self.OPEN)
                    pieces.append(self._buffer[:decided])
                    self._buffer = self._buffer[decided:]
                    return pieces
                pieces.append(self._buffer[:start])
                self._buffer = self._buffer[start + len(self.OPEN) :]
                self._in_block = True

    def finish(self) -> list[_Piece]:
        if self._in_block:
            return [_Block(self.OPEN + self._buffer, self._buffer, terminated=False)]
        return [self._buffer]


class _Llama3JsonSplitter:
    """``[<|python_tag|>] {call} ; {call} ...`` at the start of the output; anything else is text.

    States: ``start`` (not yet known whether the output opens with a call), ``marker`` (after the tag or a ``;``,
    waiting for the call's first character), ``object`` (inside a call's braces), ``rest`` (after a marker, a
    call that does not open with ``{``: it runs to the end), ``after`` (after a call), ``text`` (no more calls).
    """

    TAG = "<|python_tag|>"

    def __init__(self) -> None:
        self._state = "start"
        self._buffer = ""  # the undecided start, or the would-be call so far (its marker included)
        self._body_start = 0  # where the call's JSON starts in the buffer
        self._depth = 0  # open braces outside JSON strings
        self._in_string = False
        self._escaped = False

    def feed(self, text: str) -> list[_Piece]:
        pieces: list[_Piece] = []
        for position, char in enumerate(text):
            if self._state == "text":
                pieces.append(text[position:])
                break
            self._step(char, pieces)
        return pieces

    def finish(self) -> list[_Piece]:
        if self._state == "start":
            return [self._buffer]
        if self._state == "marker":
            return [_Block(self._buffer, "", terminated=False)]
        if self._state in ("object", "rest"):
            body = self._buffer[self._body_start :]
            return [_Block(self._buffer, body, terminated=self._state == "rest")]
        return []

    def _step(self, char: str, pieces: list[_Piece]) -> None:
        if self._state == "start":
            self._buffer += char
            opening = self._buffer.lstrip()
            if opening in (self.TAG, "{"):
                pieces.append(self._buffer[: len(self._buffer) - len(opening)])
                self._buffer = self.TAG if opening == self.TAG else ""
                self._state = "marker"
                if opening == "{":
                    self._step(char, pieces)
            elif opening and not self.TAG.startswith(opening):
                pieces.append(self._buffer)
                self._state = "text"
        elif self._state == "marker":
            if not char.isspace():
                self._body_start = len(self._buffer)
                self._state = "object" if char == "{" else "rest"
            self._buffer += char
            if char == "{":
                self._depth, self._in_string, self._escaped = 1, False, False
        elif self._state == "object":
            self._buffer += char
            self._scan_json(char)
            if self._depth == 0:
                body = self._buffer[self._body_start :]
                pieces.append(_Block(self._buffer, body, terminated=True))
                self._buffer = ""
                self._state = "after"
        elif self._state == "rest":
            self._buffer += char
        elif char == ";":  # after a call
            self._buffer = char
            self._state = "marker"
        else:
            pieces.append(char)
            if not char.isspace():
                self._state = "text"

    def _scan_json(self, char: str) -> None:
        if self._escaped:
            self._escaped = False
        elif self._in_string:
            self._escaped = char == "\\"
            self._in_string = char != '"'
        elif char == '"':
            self._in_string = True
        elif char == "{":
            self._depth += 1
        elif char == "}":
            self._depth -= 1


def _excerpt(text: str) -> str:
    short = text if len(text) <= _EXCERPT_CHARS else text[: _EXCERPT_CHARS - 3] + "..."
    return json.dumps(short, ensure_ascii=False)


def _error(code: str, detail: str, block: _Block) -> str:
    return f"{code}: {detail} in {_excerpt(block.raw)}"


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _load_json(text: str) -> object:
    return json.loads(text, parse_constant=_reject_constant)


def _arguments_object(call: dict) -> dict | None:
    """The call's arguments as an object (``{}`` when it has none), or None when they are not one."""
    key = next((key for key in _ARGUMENT_KEYS if key in call), None)
    if key is None:
        return {}
    arguments = call[key]
    if isinstance(arguments, str):
        try:
            arguments = _load_json(arguments)
        except (ValueError, RecursionError):
            return None
    return arguments if isinstance(arguments, dict) else None


def _read_call(block: _Block, known_tools: Collection[str] | None) -> tuple[str, str] | str:
    """(name, arguments JSON) of a well-formed call to a known tool, or the error that says why it is not one."""
    try:
        call = _load_json(block.body)
    except (ValueError, RecursionError) as err:
        if not block.terminated:
            return _error("unterminated", "the output ends inside the tool call", block)
        return _error("invalid_json", f"the tool call is not valid JSON ({err})", block)
    if not isinstance(call, dict):
        return _error("not_an_object", "the tool call is not a JSON object", block)
    name = call.get("name")
    if not isinstance(name, str) or not name:
        return _error("missing_name", 'the tool call has no "name" string', block)
    arguments = _arguments_object(call)
    if arguments is None:
        return _error("invalid_arguments", f"the arguments of {name!r} are not a JSON object", block)
    if known_tools is not None and name not in known_tools:
        return _error("unknown_tool", f"{name!r} is not a known tool", block)
    return name, json.dumps(arguments, ensure_ascii=False)


def _join_content(deltas: list[Delta]) -> list[Delta]:
    """The deltas with each run of content deltas joined into one."""
    joined: list[Delta] = []
    for delta in deltas:
        if joined and isinstance(delta, ContentDelta) and isinstance(joined[-1], ContentDelta):
            joined[-1] = ContentDelta(joined[-1].text + delta.text)
        else:
            joined.append(delta)
    return joined


class ToolCallStream:
    """The parse of one output as its text arrives: ``feed`` each new piece, then ``finish``; both return the
    deltas that became decided. ``result()`` (after ``finish``) is the whole parse, with the streamed call ids."""

    def __init__(self, splitter: _Splitter, known_tools: Collection[str] | None) -> None:
        self._splitter = splitter
        self._known_tools = known_tools
        self._content: list[str] = []
        self._tool_calls: list[ToolCall] = []
        self._errors: list[str] = []
        self._held_space = ""  # whitespace that ends the content so far: dropped if a valid call comes next
        self._after_call = False  # the content so far ends with a valid call: whitespace is dropped
        self._finished = False

    def feed(self, text: str) -> list[Delta]:
        if self._finished:
            raise RuntimeError("feed() after finish()")
        return _join_content(self._take(self._splitter.feed(text)))

    def finish(self) -> list[Delta]:
        if self._finished:
            raise RuntimeError("finish() called twice")
        self._finished = True
        deltas = self._take(self._splitter.finish())
        if self._held_space:
            deltas.append(self._emit_content(self._held_space))
        return _join_content(deltas)

    def result(self) -> ParsedOutput:
        if not self._finished:
            raise RuntimeError("result() before finish()")
        return ParsedOutput("".join(self._content) or None, list(self._tool_calls), list(self._errors))

    def _take(self, pieces: list[_Piece]) -> list[Delta]:
        deltas: list[Delta] = []
        for piece in pieces:
            deltas += self._add_text(piece) if isinstance(piece, str) else self._add_block(piece)
        return deltas

    def _add_text(self, text: str) -> list[Delta]:
        if self._after_call:
            text = text.lstrip()
            if not text:
                return []
            self._after_call = False
        visible = text.rstrip()
        if not visible:
            self._held_space += text
            return []
        delta = self._emit_content(self._held_space + visible)
        self._held_space = text[len(visible) :]
        return [delta]

    def _emit_content(self, text: str) -> ContentDelta:
        self._content.append(text)
        return ContentDelta(text)

    def _add_block(self, block: _Block) -> list[Delta]:
        call = _read_call(block, self._known_tools)
        if isinstance(call, str):
            self._errors.append(call)
            return self._add_text(block.raw)
        tool_call = ToolCall(f"call_{uuid.uuid4().hex}", *call)
        index = len(self._tool_calls)
        self._tool_calls.append(tool_call)
        self._held_space, self._after_call = "", True
        return [
            ToolCallDelta(index, id=tool_call.id, name=tool_call.name),
            ToolCallDelta(index, arguments=tool_call.arguments),
        ]


class ToolCallParser:
    """One tool-call format: ``parse`` a whole output, or ``stream`` one as it is generated."""

    def __init__(self, name: str, new_splitter: Callable[[], _Splitter], opening: str, arguments_key: str) -> None:
        self.name = name
        self._new_splitter = new_splitter
        self._opening = opening  # what a call starts with, before its JSON
        self._arguments_key = arguments_key

    def forced_opening(self, name: str | None) -> str:
        """The start of a call, up to its name (``name`` None) or up to its arguments: text an output can be made
        to begin with so that it is a call (``tool_choice`` required, or a named function)."""
        if name is None:
            return self._opening + '{"name": "'
        return self._opening + json.dumps({"name": name, self._arguments_key: None})[: -len("null}")]

    def stream(self, known_tools: Collection[str] | None = None) -> ToolCallStream:
        return ToolCallStream(self._new_splitter(), known_tools)

    def parse(self, text: str, known_tools: Collection[str] | None = None) -> ParsedOutput:
        stream = self.stream(known_tools)
        stream.feed(text)
        stream.finish()
        return stream.result()


_PARSERS = {
    parser.name: parser
    for parser in (
        ToolCallParser("hermes", _HermesSplitter, "<tool_call>\n", "arguments"),
        ToolCallParser("llama3_json", _Llama3JsonSplitter, "", "parameters"),
    )
}
TOOL_PARSER_NAMES = tuple(_PARSERS)


def get_tool_parser(name: str) -> ToolCallParser:
    try:
        return _PARSERS[name]
    except KeyError:
        raise ValueError(f"unknown tool parser {name!r}; choose one of {', '.join(TOOL_PARSER_NAMES)}") from None

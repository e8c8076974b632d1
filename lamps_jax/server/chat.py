"""``/v1/chat/completions``: messages rendered by the model's chat template, the answer whole or streamed as
``chat.completion.chunk`` events, and tool calls read from it by the server's tool-call parser.

Tool calling: with ``tools`` and ``tool_choice`` ``auto`` (the default), the tools go to the template and the
output is parsed: valid calls come back as ``tool_calls`` with ``finish_reason="tool_calls"``, streamed as the
parser decides them. ``tool_choice="none"`` neither renders the tools nor parses. ``required`` and a named function
would need constrained decoding, which the engine does not have: they are refused, not approximated.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from lamps_jax.request import RequestOutput
from lamps_jax.server.chat_template import render_chat
from lamps_jax.server.engine_stream import EngineStream, until_disconnected
from lamps_jax.server.errors import bad_request
from lamps_jax.server.protocol import ChatCompletionRequest, NamedToolChoice
from lamps_jax.server.serving import ServingContext, new_id, now, usage
from lamps_jax.server.sse import EventStreamResponse, event
from lamps_jax.server.tool_parsers import ContentDelta, Delta, ToolCall, ToolCallParser, finish_reason


def tool_parser_for(ctx: ServingContext, request: ChatCompletionRequest) -> ToolCallParser | None:
    """The parser the output goes through (None: the output is all content); refuses what is not supported."""
    choice = request.tool_choice
    if choice == "required" or isinstance(choice, NamedToolChoice):
        shown = "required" if choice == "required" else f"function {choice.function.name!r}"
        raise bad_request(
            f'tool_choice {shown} is not supported yet (it needs constrained decoding): send "auto" or "none"',
            "unsupported_value",
            "tool_choice",
        )
    if not request.tools or choice == "none":
        return None
    if ctx.tool_parser is None:
        raise bad_request(
            'tools need a tool-call parser: start the server with --tool-call-parser, or send tool_choice "none"',
            "tool_parser_not_configured",
            "tools",
        )
    return ctx.tool_parser


def _tool_call(call: ToolCall) -> dict:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def _message(output: RequestOutput, parser: ToolCallParser | None, tool_names: list[str]) -> tuple[dict, str]:
    """The assistant message and the finish reason."""
    if parser is None:
        return {"role": "assistant", "content": output.text}, output.finish_reason
    parsed = parser.parse(output.text, tool_names)
    message = {"role": "assistant", "content": parsed.content}
    if parsed.tool_calls:
        message["tool_calls"] = [_tool_call(call) for call in parsed.tool_calls]
    return message, finish_reason(parsed, output.finish_reason)


def _delta(piece: Delta) -> dict:
    if isinstance(piece, ContentDelta):
        return {"content": piece.text}
    call: dict = {"index": piece.index}
    if piece.id is not None:
        call |= {"id": piece.id, "type": "function"}
    function = {"name": piece.name} if piece.name is not None else {}
    call["function"] = function | {"arguments": piece.arguments}
    return {"tool_calls": [call]}


async def create_chat_completion(ctx: ServingContext, request: ChatCompletionRequest, raw_request: Request) -> Response:
    ctx.check(request)
    parser = tool_parser_for(ctx, request)
    tools = [tool.model_dump(exclude_none=True) for tool in request.tools] if parser is not None else None
    prompt = ctx.tokenize(render_chat(ctx.tokenizer, request.messages, tools), "messages")
    max_tokens = ctx.max_tokens(request, len(prompt), "messages", default=ctx.max_model_len)
    req_id = new_id("chatcmpl")
    header = {"id": req_id, "created": now(), "model": ctx.model_name}
    if request.stream:
        stream = await until_disconnected(raw_request, ctx.open(req_id, prompt, request, max_tokens))
        chunks = _chunks(stream, header, parser, request, len(prompt))
        return EventStreamResponse(chunks, stream.aclose)
    output = await until_disconnected(raw_request, ctx.generate(req_id, prompt, request, max_tokens))
    message, reason = _message(output, parser, request.tool_names)
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": reason}
    body = header | {
        "object": "chat.completion",
        "choices": [choice],
        "usage": usage(len(prompt), len(output.token_ids)),
    }
    return JSONResponse(body)


async def _chunks(
    stream: EngineStream,
    header: dict,
    parser: ToolCallParser | None,
    request: ChatCompletionRequest,
    prompt_tokens: int,
) -> AsyncIterator[str]:
    header = header | {"object": "chat.completion.chunk"}
    extra = {"usage": None} if request.include_usage else {}

    def chunk(delta: dict, reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        return event(header | {"choices": [choice]} | extra)

    yield chunk({"role": "assistant", "content": ""})
    tool_stream = parser.stream(request.tool_names) if parser is not None else None
    async with aclosing(stream.deltas()) as deltas:
        async for delta in deltas:
            if tool_stream is None:
                pieces: list[Delta] = [ContentDelta(delta.text)] if delta.text else []
            else:
                pieces = tool_stream.feed(delta.text) + (tool_stream.finish() if delta.finished else [])
            for piece in pieces:
                yield chunk(_delta(piece))
            if delta.finished:
                reason = delta.output.finish_reason
                if tool_stream is not None:
                    reason = finish_reason(tool_stream.result(), reason)
                yield chunk({}, reason)
                if request.include_usage:
                    yield event(header | {"choices": [], "usage": usage(prompt_tokens, len(delta.output.token_ids))})

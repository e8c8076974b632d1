"""``/v1/chat/completions``: messages rendered by the model's chat template, the answer whole or streamed as
``chat.completion.chunk`` events, tool calls read from it by the server's tool-call parser.

The request's tool plan (``tool_choice``) decides which tools the template shows and what the model writes first;
calls to the server's own tools run inside the request (the engine pauses it under its policy's KV strategy while
the tool runs, and the template writes the result back), calls to the client's tools come back as ``tool_calls``
with ``finish_reason="tool_calls"`` (``chat_output``). ``usage`` counts what the model wrote as completion tokens,
and the prompt with the server tools' results as prompt tokens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from lamps_jax.request import RequestOutput
from lamps_jax.server.chat_output import ChatOutputReader, server_tool_calls, tool_call_json
from lamps_jax.server.chat_template import TEMPLATE_ERRORS, render_chat, template_conversation
from lamps_jax.server.engine_stream import EngineStream, until_disconnected
from lamps_jax.server.errors import bad_request
from lamps_jax.server.protocol import ChatCompletionRequest, ChatMessage
from lamps_jax.server.server_tool_use import ServerToolUse
from lamps_jax.server.serving import ServingContext, new_id, now, usage
from lamps_jax.server.sse import EventStreamResponse, event
from lamps_jax.server.tool_choice import ToolPlan, plan_tools
from lamps_jax.server.tool_parsers import ContentDelta, Delta, finish_reason
from lamps_jax.server.tool_turns import ToolTurns


def check_tool_messages(messages: list[ChatMessage]) -> None:
    """Every tool message answers a call an earlier assistant message made."""
    calls: set[str] = set()
    for index, message in enumerate(messages):
        calls.update(call.id for call in message.tool_calls or ())
        if message.role == "tool" and message.tool_call_id not in calls:
            shown = "no tool_call_id" if message.tool_call_id is None else f"tool_call_id {message.tool_call_id!r}"
            raise bad_request(
                f"the tool message has {shown}, which answers no tool call of an earlier assistant message",
                "unknown_tool_call_id",
                f"messages.{index}.tool_call_id",
            )


def _server_tool_use(ctx: ServingContext, plan: ToolPlan, conversation: list[dict]) -> ServerToolUse | None:
    if not plan.server_tools:
        return None
    try:
        turns = ToolTurns(ctx.tokenizer, conversation, plan.template_tools)
        for name in plan.server_tools:
            turns.check(name)
    except TEMPLATE_ERRORS as err:
        raise bad_request(str(err), "chat_template_error", "messages") from err
    return ServerToolUse(plan.parser, plan.server_tools, turns, plan.forced_opening)


def _usage(prompt_tokens: int, output: RequestOutput) -> dict:
    results = len(output.token_ids) - output.num_generated_tokens  # server tools' answers: read, not written
    return usage(prompt_tokens + results, output.num_generated_tokens)


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
    check_tool_messages(request.messages)
    plan = plan_tools(request, ctx.tool_parser, ctx.server_tools)
    conversation = template_conversation(ctx.tokenizer, request.messages)
    prompt_text = render_chat(ctx.tokenizer, conversation, plan.template_tools) + plan.forced_opening
    tool_use = _server_tool_use(ctx, plan, conversation)
    prompt = ctx.tokenize(prompt_text, "messages")
    max_tokens = ctx.max_tokens(request, len(prompt), "messages", default=ctx.max_model_len)
    req_id = new_id("chatcmpl")
    header = {"id": req_id, "created": now(), "model": ctx.model_name}
    if request.stream:
        stream = await until_disconnected(raw_request, ctx.open(req_id, prompt, request, max_tokens, tool_use))
        chunks = _chunks(stream, header, ChatOutputReader(plan), request, len(prompt))
        return EventStreamResponse(chunks, stream.aclose)
    output = await until_disconnected(raw_request, ctx.generate(req_id, prompt, request, max_tokens, tool_use))
    reader = ChatOutputReader(plan)
    reader.feed(output.text, output.result_spans)
    reader.finish()
    parsed = reader.client_view()
    message: dict = {"role": "assistant", "content": parsed.content}
    if parsed.tool_calls:
        message["tool_calls"] = [tool_call_json(call) for call in parsed.tool_calls]
    if plan.server_tools:
        message["server_tool_calls"] = server_tool_calls(output)
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": finish_reason(parsed, output.finish_reason),
    }
    body = header | {"object": "chat.completion", "choices": [choice], "usage": _usage(len(prompt), output)}
    return JSONResponse(body)


async def _chunks(
    stream: EngineStream, header: dict, reader: ChatOutputReader, request: ChatCompletionRequest, prompt_tokens: int
) -> AsyncIterator[str]:
    header = header | {"object": "chat.completion.chunk"}
    extra = {"usage": None} if request.include_usage else {}

    def chunk(delta: dict, reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        return event(header | {"choices": [choice]} | extra)

    yield chunk({"role": "assistant", "content": ""})
    async with aclosing(stream.deltas()) as deltas:
        async for delta in deltas:
            pieces = reader.feed(delta.text, delta.result_spans)
            if delta.finished:
                pieces += reader.finish()
            for piece in pieces:
                yield chunk(_delta(piece))
            if delta.finished:
                output = delta.output
                last = {"server_tool_calls": server_tool_calls(output)} if reader.has_server_tools else {}
                yield chunk(last, finish_reason(reader.client_view(), output.finish_reason))
                if request.include_usage:
                    yield event(header | {"choices": [], "usage": _usage(prompt_tokens, output)})

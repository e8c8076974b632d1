"""``/v1/completions``: a prompt (text or token ids) continued, whole or streamed as ``text_completion`` chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from lamps_jax.server.engine_stream import EngineStream, until_disconnected
from lamps_jax.server.protocol import OPENAI_DEFAULT_COMPLETION_TOKENS, CompletionRequest
from lamps_jax.server.serving import ServingContext, new_id, now, usage
from lamps_jax.server.sse import EventStreamResponse, event


def _choice(text: str, finish_reason: str | None) -> dict:
    return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}


async def create_completion(ctx: ServingContext, request: CompletionRequest, raw_request: Request) -> Response:
    ctx.check(request)
    prompt = ctx.tokenize(request.prompt, "prompt") if isinstance(request.prompt, str) else request.prompt
    max_tokens = ctx.max_tokens(request, len(prompt), "prompt", OPENAI_DEFAULT_COMPLETION_TOKENS)
    req_id = new_id("cmpl")
    header = {"id": req_id, "object": "text_completion", "created": now(), "model": ctx.model_name}
    if request.stream:
        stream = await until_disconnected(raw_request, ctx.open(req_id, prompt, request, max_tokens))
        return EventStreamResponse(_events(stream, header, len(prompt), request.include_usage), stream.aclose)
    output = await until_disconnected(raw_request, ctx.generate(req_id, prompt, request, max_tokens))
    body = header | {
        "choices": [_choice(output.text, output.finish_reason)],
        "usage": usage(len(prompt), len(output.token_ids)),
    }
    return JSONResponse(body)


async def _events(stream: EngineStream, header: dict, prompt_tokens: int, include_usage: bool) -> AsyncIterator[str]:
    extra = {"usage": None} if include_usage else {}
    async with aclosing(stream.deltas()) as deltas:
        async for delta in deltas:
            finish_reason = delta.output.finish_reason if delta.finished else None
            if delta.text or finish_reason:
                yield event(header | {"choices": [_choice(delta.text, finish_reason)]} | extra)
            if delta.finished and include_usage:
                yield event(header | {"choices": [], "usage": usage(prompt_tokens, len(delta.output.token_ids))})

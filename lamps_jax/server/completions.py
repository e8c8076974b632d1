"""``/v1/completions``: a prompt (text or token ids) continued, whole or streamed as ``text_completion`` chunks.

With ``return_token_ids`` a choice also carries ``token_ids`` (the output's, or a chunk's share of them) and, in the
whole response and the first chunk, ``prompt_token_ids``: a client that continues the text as token ids (a turn
after a tool call) then sends exactly the tokens the model saw.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from lamps_jax.server.engine_stream import EngineStream, until_disconnected
from lamps_jax.server.protocol import OPENAI_DEFAULT_COMPLETION_TOKENS, CompletionRequest
from lamps_jax.server.serving import ServingContext, new_id, now, usage
from lamps_jax.server.sse import EventStreamResponse, event


def _choice(text: str, finish_reason: str | None, token_ids: dict | None = None) -> dict:
    """``token_ids``: the ``return_token_ids`` fields, when asked for."""
    return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason} | (token_ids or {})


async def create_completion(ctx: ServingContext, request: CompletionRequest, raw_request: Request) -> Response:
    ctx.check(request)
    prompt = ctx.tokenize(request.prompt, "prompt") if isinstance(request.prompt, str) else request.prompt
    max_tokens = ctx.max_tokens(request, len(prompt), "prompt", OPENAI_DEFAULT_COMPLETION_TOKENS)
    req_id = new_id("cmpl")
    header = {"id": req_id, "object": "text_completion", "created": now(), "model": ctx.model_name}
    if request.stream:
        stream = await until_disconnected(raw_request, ctx.open(req_id, prompt, request, max_tokens))
        prompt_ids = prompt if request.return_token_ids else None
        events = _events(stream, header, prompt_ids, len(prompt), request.include_usage)
        return EventStreamResponse(events, stream.aclose)
    output = await until_disconnected(raw_request, ctx.generate(req_id, prompt, request, max_tokens))
    ids = {"prompt_token_ids": list(prompt), "token_ids": output.token_ids} if request.return_token_ids else None
    body = header | {
        "choices": [_choice(output.text, output.finish_reason, ids)],
        "usage": usage(len(prompt), len(output.token_ids)),
    }
    return JSONResponse(body)


async def _events(
    stream: EngineStream, header: dict, prompt: list[int] | None, prompt_tokens: int, include_usage: bool
) -> AsyncIterator[str]:
    """``prompt``: the prompt's token ids when the request asked for token ids."""
    extra = {"usage": None} if include_usage else {}
    prompt_ids = {"prompt_token_ids": list(prompt)} if prompt is not None else {}  # sent with the first chunk
    async with aclosing(stream.deltas()) as deltas:
        async for delta in deltas:
            finish_reason = delta.output.finish_reason if delta.finished else None
            ids = prompt_ids | {"token_ids": delta.token_ids} if prompt is not None else None
            if delta.text or finish_reason or (ids is not None and delta.token_ids):
                yield event(header | {"choices": [_choice(delta.text, finish_reason, ids)]} | extra)
                prompt_ids = {}
            if delta.finished and include_usage:
                yield event(header | {"choices": [], "usage": usage(prompt_tokens, len(delta.output.token_ids))})

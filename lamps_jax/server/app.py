"""The OpenAI-compatible FastAPI app over a running ``AsyncLLM``.

Routes: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions``, ``GET /health`` (200: the
server answers; a stopped engine loop shows as 503 ``engine_stopped`` on generation requests) and ``GET /metrics``
(Prometheus text). Every error is OpenAI's JSON shape
(``errors``). The app owns the engine: when the server stops, its lifespan shuts the ``AsyncLLM`` down, which
aborts what is in flight and empties every page pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from lamps_jax.async_llm import AsyncLLM
from lamps_jax.server.chat import create_chat_completion
from lamps_jax.server.completions import create_completion
from lamps_jax.server.errors import install_error_handlers
from lamps_jax.server.metrics import ServerMetrics
from lamps_jax.server.protocol import ChatCompletionRequest, CompletionRequest
from lamps_jax.server.server_tools import ServerTool
from lamps_jax.server.serving import ServingContext, now
from lamps_jax.server.tool_parsers import get_tool_parser


def build_app(
    llm: AsyncLLM,
    model_name: str,
    tool_call_parser: str | None = None,
    server_tools: dict[str, ServerTool] | None = None,
) -> FastAPI:
    """The app serving ``llm`` as ``model_name``; ``tool_call_parser``: hermes, llama3_json or None (no tools);
    ``server_tools``: tools the server runs itself when the model calls them (``server_tools.load_tools``)."""
    server_tools = server_tools or {}
    if server_tools and tool_call_parser is None:
        raise ValueError("server-side tools need a tool-call parser (--tool-call-parser)")
    for name, tool in server_tools.items():
        llm.engine.register_tool(name, tool)
    ctx = ServingContext(
        llm,
        model_name,
        ServerMetrics(llm),
        get_tool_parser(tool_call_parser) if tool_call_parser is not None else None,
        server_tools,
    )
    created = now()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(llm.shutdown)

    app = FastAPI(title="lamps-jax", lifespan=lifespan)
    app.state.serving = ctx
    install_error_handlers(app)

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        model = {"id": model_name, "object": "model", "created": created, "owned_by": "lamps-jax"}
        return JSONResponse({"object": "list", "data": [model]})

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest, raw_request: Request) -> Response:
        return await create_completion(ctx, request, raw_request)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatCompletionRequest, raw_request: Request) -> Response:
        return await create_chat_completion(ctx, request, raw_request)

    return app
